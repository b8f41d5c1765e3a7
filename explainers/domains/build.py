"""Building a domain from a labelled corpus: schema, pairs, taggers, space, methods per concept.

The same steps build every domain, an uploaded corpus and CEBaB alike:

1. `validate_rows` / `infer_schema`: each row is `{"text", "labels": {concept: value}, "origin"?, "id"?}`;
   the schema is given (labels must fit it) or inferred from the labels seen (a concept some
   rows leave out gets the value `unknown`);
2. `pool_from_rows`: texts sharing an origin that differ in exactly one concept are
   counterfactual pairs of that concept (both directions);
3. optionally `augment` (LLM-generated counterfactuals for a corpus without edits);
4. taggers, with held-out accuracy per concept (on `tagger_eval` when given, else on held-out
   origins) beside the majority-value rate: a tagger that does not beat it is not used;
5. a concept space (one contrastive head per concept over frozen MiniLM; a concept without
   pairs keeps the pretrained projection) with its nearest-counterfactual hit rate;
6. `meta.json`, written last: an interrupted build leaves no domain behind.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from explainers.artifacts import META, OWNER, child_path, data_hash, staging_dir, touch_staging, write_meta
from explainers.concepts import Concept, ConceptSchema
from explainers.data.pool import Pool
from explainers.domains.domain import (
    DEFAULT_SPACE,
    FORMAT_VERSION,
    KIND,
    PAIR_METHODS,
    Domain,
    load_domain,
    majority_rate,
)
from explainers.jsonl import loads_line
from explainers.progress import checkpoint

UNKNOWN = "unknown"
MAX_LABEL_CHARS = 64
Log = Callable[[str], None] | None


class DomainBuildError(ValueError):
    """A corpus or schema that cannot make a domain; `where` names the line or field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def infer_schema(rows: Iterable[Mapping[str, Any]], name: str = "text") -> ConceptSchema:
    """Concepts in first-seen order, values sorted; `unknown` added where some rows lack the concept."""
    rows = list(rows)
    values: dict[str, set[str]] = {}
    for row in rows:
        for c, v in row["labels"].items():
            values.setdefault(c, set()).add(v)
    concepts = []
    for c, seen in values.items():
        if any(c not in row["labels"] for row in rows):
            seen = seen | {UNKNOWN}
        concepts.append(Concept(c, tuple(sorted(seen))))
    if not concepts:
        raise DomainBuildError(
            "body.file", "no row carries labels: a domain needs at least one labelled concept"
        )
    return ConceptSchema(tuple(concepts), domain=name)


def validate_rows(
    lines: Iterable[str | Mapping[str, Any]],
    schema: ConceptSchema | None = None,
    *,
    max_text_chars: int = 20000,
    max_labels: int | None = None,
) -> list[dict[str, Any]]:
    """Parse and check corpus rows (JSON lines or dicts); errors name the 1-based line.

    `max_labels` caps the concepts one row may label (a service's per-domain concept limit)."""
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        where = f"body.file.line{n}"
        if isinstance(line, str):
            if not line.strip():
                continue
            try:
                obj = loads_line(line)
            except ValueError as e:  # bad syntax, nesting too deep, an integer too long
                raise DomainBuildError(where, str(e)) from e
        else:
            obj = dict(line)
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise DomainBuildError(where, 'expected {"text": non-empty string, "labels": {concept: value}}')
        bad = _unstorable(
            [
                obj["text"],
                *map(str, obj.get("labels", {}) if isinstance(obj.get("labels"), dict) else ()),
                *(map(str, obj["labels"].values()) if isinstance(obj.get("labels"), dict) else ()),
                str(obj.get("origin", "")),
                str(obj.get("id", "")),
            ]
        )
        if bad:
            raise DomainBuildError(where, bad)
        if len(obj["text"]) > max_text_chars:
            raise DomainBuildError(where + ".text", f"at most {max_text_chars} characters")
        labels = obj.get("labels", {})
        if max_labels is not None and isinstance(labels, dict) and len(labels) > max_labels:
            raise DomainBuildError(
                where + ".labels",
                f"{len(labels)} concepts on one line; this server allows at most {max_labels} per domain",
            )
        if not isinstance(labels, dict) or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and k
            and v
            and len(k) <= MAX_LABEL_CHARS
            and len(v) <= MAX_LABEL_CHARS
            for k, v in labels.items()
        ):
            raise DomainBuildError(
                where + ".labels",
                f"must map concept names to value strings (1-{MAX_LABEL_CHARS} characters each)",
            )
        if schema is not None:
            for c, v in labels.items():
                if c not in schema:
                    raise DomainBuildError(
                        f"{where}.labels.{c}", f"unknown concept; the schema has {schema.names}"
                    )
                if v not in schema[c].values:
                    raise DomainBuildError(
                        f"{where}.labels.{c}",
                        f"{v!r} is not a value of {c!r}; allowed: {list(schema[c].values)}",
                    )
        origin, ident = obj.get("origin"), obj.get("id")
        for key, value in (("origin", origin), ("id", ident)):
            if value is not None and not isinstance(value, str | int):
                raise DomainBuildError(f"{where}.{key}", "must be a string or an integer")
        rows.append(
            {
                "text": obj["text"],
                "labels": labels,
                "origin": None if origin is None else str(origin),
                "id": None if ident is None else str(ident),
            }
        )
    if len(rows) < 2:
        raise DomainBuildError("body.file", f"a domain needs at least 2 labelled texts, got {len(rows)}")
    return rows


def _unstorable(strings: Iterable[str]) -> str | None:
    """Why a string cannot be stored and sent on (lone surrogates, NUL), or None."""
    for x in strings:
        if "\x00" in x:
            return "contains a NUL character"
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


def pool_from_rows(rows: list[dict[str, Any]], schema: ConceptSchema) -> Pool:
    """A Pool from rows (duplicate texts kept once); same-origin texts differing in one concept are pairs."""
    texts: list[str] = []
    labels: list[dict[str, str]] = []
    origins: list[str] = []
    ids: list[str] = []
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        texts.append(r["text"])
        labels.append({c: r["labels"].get(c, UNKNOWN) for c in schema.names})
        origins.append(r.get("origin") or r.get("id") or f"row{i}")
        ids.append(r.get("id") or str(i))
    groups: dict[str, list[int]] = {}
    for i, o in enumerate(origins):
        groups.setdefault(o, []).append(i)
    pairs: list[tuple[int, int, str]] = []
    for members in groups.values():
        for i in members:
            for j in members:
                diff = [c for c in schema.names if labels[i][c] != labels[j][c]]
                if i != j and len(diff) == 1:
                    pairs.append((i, j, diff[0]))
    return Pool(texts=texts, labels=labels, schema=schema, ids=ids, origins=origins, pairs=pairs)


def pair_stats(pool: Pool) -> dict[str, Any]:
    by_concept = Counter(c for _, _, c in pool.pairs)
    by_direction: Counter[str] = Counter()
    for b, cf, c in pool.pairs:
        by_direction[f"{c}:{pool.labels[b][c]}->{pool.labels[cf][c]}"] += 1
    origins = pool.origins or []
    return {
        "texts": len(pool),
        "origins": len(set(origins)),
        "groups": sum(1 for n in Counter(origins).values() if n > 1),
        "pairs": {c: by_concept.get(c, 0) for c in pool.schema.names},
        "pairs_by_direction": dict(sorted(by_direction.items())),
        "values": {c: dict(Counter(lab[c] for lab in pool.labels)) for c in pool.schema.names},
    }


def _heldout_split(pool: Pool, share: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train/held-out text indices split by origin, so no edit of a held-out text is trained on."""
    origins = pool.origins or [str(i) for i in range(len(pool))]
    uniq = sorted(set(origins))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(uniq, size=max(1, int(round(len(uniq) * share))), replace=False).tolist())
    train = [i for i, o in enumerate(origins) if o not in held]
    test = [i for i, o in enumerate(origins) if o in held]
    return train, test


def fit_taggers(
    pool: Pool, out: Path, eval_set: tuple[list[str], list[dict[str, str]]] | None = None, log: Log = None
) -> dict[str, dict[str, Any]]:
    """Fit taggers on the pool, save them to `out`; per concept: held-out accuracy, majority rate, usable."""
    from explainers.taggers import TaggerSet

    schema = pool.schema
    if eval_set is None and len(pool) >= 10:
        train, test = _heldout_split(pool)
        probe = TaggerSet(schema).fit([pool.texts[i] for i in train], [pool.labels[i] for i in train])
        eval_set = ([pool.texts[i] for i in test], [pool.labels[i] for i in test])
        accuracy = probe.accuracy(*eval_set)
        how = "held-out origins (20%)"
    else:
        accuracy = None
        how = "given evaluation set" if eval_set else "none (fewer than 10 texts)"
    taggers = TaggerSet(schema).fit(pool.texts, pool.labels)
    if accuracy is None and eval_set is not None:
        accuracy = taggers.accuracy(*eval_set)
    report: dict[str, dict[str, Any]] = {}
    for c in schema.concepts:
        acc = (accuracy or {}).get(c.name, {})
        majority = majority_rate(eval_set[1], c.name, c.values) if eval_set else float("nan")
        a = float(acc.get("accuracy", float("nan")))
        usable = bool(np.isfinite(a) and np.isfinite(majority) and a > majority)
        report[c.name] = {
            "accuracy": None if not np.isfinite(a) else round(a, 4),
            "majority": None if not np.isfinite(majority) else round(majority, 4),
            "n_eval": int(acc.get("n", 0)),
            "usable": usable,
            "evaluated_on": how,
        }
    taggers.save(
        out, trained_on=f"{len(pool)} domain texts", data_hash=data_hash(pool.texts), accuracy=report
    )
    if log:
        log(f"taggers: {report}")
    return report


def train_space(pool: Pool, encoder: Any, out: Path, log: Log = None) -> dict[str, Any]:
    """One contrastive head per concept over frozen MiniLM (concepts without pairs stay pretrained)."""
    from explainers.matching.space import ConceptSpace
    from explainers.matching.trainers import TrainConfig, train_head

    started = time.perf_counter()
    base = encoder.encode(pool.texts)
    cfg = TrainConfig()
    names = pool.schema.names
    origins = pool.origins or [str(i) for i in range(len(pool))]
    heads, training = {}, {}
    for c in names:
        heads[c], training[c] = train_head(base, pool.labels, origins, c, names, cfg, log=log)
    space = ConceptSpace(pool, encoder, heads=heads, base_vectors=base)
    space.build_indices()
    pretrained = ConceptSpace(pool, encoder, base_vectors=base)
    pretrained.build_indices()
    diagnostics = {
        "hit_rate": {c: space.nearest_counterfactual_hit_rate(c) for c in names},
        "hit_rate_pretrained": {c: pretrained.nearest_counterfactual_hit_rate(c) for c in names},
    }
    space.save(
        out,
        name=DEFAULT_SPACE,
        trainer="head",
        config=cfg.to_dict(),
        training=training,
        diagnostics=diagnostics,
        n_pairs=len(pool.pairs),
        build_seconds=round(time.perf_counter() - started, 2),
    )
    return {
        "trainer": "head",
        "hit_rate": diagnostics["hit_rate"],
        "hit_rate_pretrained": diagnostics["hit_rate_pretrained"],
        "trained_concepts": [c for c in names if training[c]["queries"] > 0],
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def methods_by_concept(pool: Pool, methods: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """For each concept, each method: None if it can run, else why not."""
    counts = Counter(c for _, _, c in pool.pairs)
    out: dict[str, dict[str, str | None]] = {}
    for c in pool.schema.names:
        out[c] = {
            m: (
                "no counterfactual pairs of this concept in the corpus"
                if m in PAIR_METHODS and counts.get(c, 0) == 0
                else None
            )
            for m in sorted(methods)
        }
    return out


def build_domain(root: Path, domain_id: str, pool: Pool, *, encoder: Any, **options: Any) -> Domain:
    """Build root/domain_id atomically and load it (see `_build_domain` for the options).

    The build writes into a folder of its own under root/.staging, renamed into place when
    complete; whatever ends it early (an error, a cancelled job) removes that folder, and a
    process killed mid-build leaves one that `clean_stale_staging` removes at the next start.
    """
    tmp = staging_dir(Path(root), domain_id)
    try:
        return _build_domain(root, domain_id, pool, encoder=encoder, tmp=tmp, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after success it was renamed: nothing is left there


def _build_domain(
    root: Path,
    domain_id: str,
    pool: Pool,
    *,
    encoder: Any,
    tmp: Path,
    source: str = "upload",
    augment: Callable[[Pool], tuple[Pool, dict[str, Any]]] | None = None,
    tagger_eval: tuple[list[str], list[dict[str, str]]] | None = None,
    taggers_builder: Callable[[Path], dict[str, dict[str, Any]]] | None = None,
    space_meta: Mapping[str, Any] | None = None,
    finish: Callable[[Path], Mapping[str, Any]] | None = None,
    replace: bool = False,
    log: Log = None,
    task: str | None = None,
    label_names: Mapping[str, str] | None = None,
) -> Domain:
    """Build root/domain_id atomically (a temporary folder renamed at the end) and load it.

    `task` and `label_names` say what the classifiers' labels mean in this domain (e.g. star
    ratings), for people reading its explanations; nothing computes with them.

    `finish(folder)` may write more files into the folder and returns more meta.json fields
    (the LLM build's provenance and report)."""
    from explainers.registry import available

    started = time.perf_counter()
    # A folder of its own per build (`tmp`): two processes building one domain (replicas starting
    # on a shared volume) never write into each other's files; the first to finish wins.
    out = child_path(Path(root), domain_id)
    generation = None
    if augment is not None:
        pool, generation = augment(pool)
        checkpoint()
        touch_staging(tmp)
    taggers = (taggers_builder or (lambda d: fit_taggers(pool, d, tagger_eval, log)))(tmp / "taggers")
    checkpoint()
    touch_staging(tmp)
    space = train_space(pool, encoder, tmp / "spaces" / DEFAULT_SPACE, log)
    checkpoint()
    if space_meta:
        meta_path = tmp / "spaces" / DEFAULT_SPACE / META
        meta_path.write_text(
            json.dumps({**json.loads(meta_path.read_text()), **space_meta}, indent=2, default=str)
        )
    extra = dict(finish(tmp)) if finish is not None else {}
    write_meta(
        tmp,
        KIND,
        format_version=FORMAT_VERSION,
        id=domain_id,
        source=source,
        schema=pool.schema.to_dict(),
        data_hash=data_hash(pool.texts),
        stats=pair_stats(pool),
        taggers=taggers,
        space=space,
        methods=methods_by_concept(pool, available()),
        generation=generation,
        task=task,
        label_names=dict(label_names) if label_names else None,
        build_seconds=round(time.perf_counter() - started, 2),
        **extra,
    )
    checkpoint()
    (tmp / OWNER).unlink(missing_ok=True)  # the staging record is not part of the domain
    if replace and out.exists():
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:  # another build of this domain finished first: keep it
        shutil.rmtree(tmp, ignore_errors=True)
    return load_domain(out, encoder=encoder)
