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

The build reports its stages (`BUILD_STAGES`: embed, taggers, space, save, load) to a
`explainers.progress.Stages`, and is resumable per stage: it works in a staging folder named
by a hash of everything its output depends on (`<id>.building-<key>`), records each finished
stage there, and a build of the same inputs after a kill reuses them. A file lock on the
folder keeps two processes (replicas on a shared volume) from writing into the same one: the
second waits for the first and loads its domain. Staging folders nobody holds (another
input's, or an older version's) are removed when a build of that domain starts.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import inspect
import json
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from explainers.progress import Stages, checkpoint, reporting_to

UNKNOWN = "unknown"
MAX_LABEL_CHARS = 64
Log = Callable[[str], None] | None
# A build's stages and their share of the work: CPU seconds per stage of a CEBaB build / 20
# (embedding the corpus with MiniLM dominates; benchmarks/results/startup.md). The weights shape
# the percent only: the ETA comes from the rate measured while the build runs.
BUILD_STAGES: tuple[tuple[str, float], ...] = (
    ("embed", 6.0),
    ("taggers", 1.2),
    ("space", 2.0),
    ("save", 0.1),
    ("load", 0.1),
)
LOAD_STAGE = ("load", 1.0)
READ_STAGE = ("read", 0.2)
AUGMENT_STAGE = ("augment", 20.0)


def build_workers() -> int:
    """Cores a build keeps busy with independent single-threaded workers (embedding, heads): the
    cores this process may use (OMP_NUM_THREADS when set), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        cores = min(cores, int(env))
    return max(1, min(4, cores))


def _encode(encoder: Any, texts: list[str], workers: int) -> np.ndarray:
    """Embed with parallel workers when the encoder can (explainers.embeddings.Encoder)."""
    if workers > 1 and "workers" in inspect.signature(encoder.encode).parameters:
        return np.asarray(encoder.encode(texts, workers=workers), dtype=np.float32)
    return np.asarray(encoder.encode(texts), dtype=np.float32)


# Bumped when a stage's output format changes, so a staging folder of older code is not reused.
STAGING_VERSION = 1


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
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
                raise DomainBuildError(f"{where}.{key}", "must be a string or an integer")
        trained = obj.get("trained")
        if trained is not None and not isinstance(trained, bool):
            raise DomainBuildError(
                f"{where}.trained", "must be true or false (was the classifier trained on this text?)"
            )
        rows.append(
            {
                "text": obj["text"],
                "labels": labels,
                "origin": None if origin is None else str(origin),
                "id": None if ident is None else str(ident),
                **({"trained": trained} if trained is not None else {}),
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
    """A Pool from rows (duplicate texts kept once); same-origin texts differing in one concept are pairs.

    A row naming no origin, or itself as its origin, is an original; the others are edits of the
    row their origin names. Rows' `trained` flags (the classifier to be explained saw this
    text) become the pool's `trained` column when any row carries one."""
    texts: list[str] = []
    labels: list[dict[str, str]] = []
    origins: list[str] = []
    ids: list[str] = []
    trained: list[bool] = []
    originals: list[bool] = []
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        texts.append(r["text"])
        labels.append({c: r["labels"].get(c, UNKNOWN) for c in schema.names})
        origins.append(r.get("origin") or r.get("id") or f"row{i}")
        ids.append(r.get("id") or str(i))
        trained.append(bool(r.get("trained", False)))
        originals.append(r.get("origin") is None or r.get("origin") == r.get("id"))
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
    marked = any("trained" in r for r in rows)
    return Pool(
        texts=texts,
        labels=labels,
        schema=schema,
        ids=ids,
        origins=origins,
        pairs=pairs,
        originals=originals,
        trained=trained if marked else None,
    )


def pair_stats(pool: Pool) -> dict[str, Any]:
    by_concept = Counter(c for _, _, c in pool.pairs)
    by_direction: Counter[str] = Counter()
    for b, cf, c in pool.pairs:
        by_direction[f"{c}:{pool.labels[b][c]}->{pool.labels[cf][c]}"] += 1
    origins = pool.origins or []
    flags = pool.original_flags()
    return {
        "texts": len(pool),
        "origins": len(set(origins)),
        "groups": sum(1 for n in Counter(origins).values() if n > 1),
        # How many texts the corpus says are originals, and marks as the classifier's training texts
        # (absent: it does not say); a calibration suspects or leaves out training texts by these.
        **({"originals": sum(flags)} if flags is not None else {}),
        **({"trained": sum(pool.trained)} if pool.trained is not None else {}),
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
        probe = TaggerSet(schema).fit(
            [pool.texts[i] for i in train], [pool.labels[i] for i in train], workers=build_workers()
        )
        eval_set = ([pool.texts[i] for i in test], [pool.labels[i] for i in test])
        accuracy = probe.accuracy(*eval_set)
        how = "held-out origins (20%)"
    else:
        accuracy = None
        how = "given evaluation set" if eval_set else "none (fewer than 10 texts)"
    taggers = TaggerSet(schema).fit(pool.texts, pool.labels, workers=build_workers())
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


def train_space(
    pool: Pool,
    encoder: Any,
    out: Path,
    log: Log = None,
    *,
    base: np.ndarray | None = None,
    stages: Stages | None = None,
) -> dict[str, Any]:
    """One contrastive head per concept over frozen MiniLM (concepts without pairs stay pretrained).

    `base`: the corpus's embeddings when the caller has them; `stages`: the running build's
    progress, whose current stage this fills (heads first, then the hit-rate diagnostics).
    """
    from explainers.matching.space import ConceptSpace
    from explainers.matching.trainers import TrainConfig, train_head

    started = time.perf_counter()
    base = encoder.encode(pool.texts) if base is None else base
    cfg = TrainConfig()
    names = pool.schema.names
    origins = pool.origins or [str(i) for i in range(len(pool))]
    heads, training = {}, {}
    # One head per concept, trained side by side on single-threaded workers (each head's small
    # batches keep two intra-op threads poorly busy; see Encoder._embed_parallel). Each head is
    # the same function of its inputs as when trained alone.
    fractions = [0.0] * len(names)
    lock = threading.Lock()

    def train(i: int, c: str) -> tuple[Any, dict[str, Any]]:
        def sink(fraction: float, note: str) -> None:
            with lock:
                fractions[i] = fraction
                share = 0.6 * sum(fractions) / len(names)
            if stages is not None:
                stages.update(share, f"heads: {c} {note}")

        if workers > 1:
            import torch

            torch.set_num_threads(1)  # this worker's own ops (restored for the process below)
        with reporting_to(sink):
            return train_head(base, pool.labels, origins, c, names, cfg, log=log)

    def pretrained_hit_rates() -> dict[str, float | None]:
        pretrained = ConceptSpace(pool, encoder, base_vectors=base)
        pretrained.build_indices()
        return {c: pretrained.nearest_counterfactual_hit_rate(c) for c in names}

    workers = max(1, min(build_workers(), len(names)))
    part = _spans(stages)
    hit_rate: dict[str, float | None] = {}
    with torch_threads(None if workers == 1 else torch_thread_count()):
        with ThreadPoolExecutor(workers, thread_name_prefix="cace-head") as ex:
            # Each worker runs in a copy of this context, so a cancelled build stops its heads too.
            futures = {c: ex.submit(contextvars.copy_context().run, train, i, c) for i, c in enumerate(names)}
            # The pretrained projection's hit rates need no head: the first worker done with the
            # heads computes them (on CEBaB the heads are uneven, so a core would wait otherwise),
            # and they overlap the trained space's own diagnostics below.
            pretrained_rates = ex.submit(contextvars.copy_context().run, pretrained_hit_rates)
            for c in names:
                heads[c], training[c] = futures[c].result()
            space = ConceptSpace(pool, encoder, heads=heads, base_vectors=base)
            space.build_indices()
            for i, c in enumerate(names):
                with part(0.6 + 0.4 * i / len(names), 0.6 + 0.4 * (i + 1) / len(names)):
                    hit_rate[c] = space.nearest_counterfactual_hit_rate(c)
            hit_rate_pretrained = pretrained_rates.result()
    diagnostics = {"hit_rate": hit_rate, "hit_rate_pretrained": hit_rate_pretrained}
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


def encoder_description(encoder: Any) -> dict[str, str | None]:
    """What embedded the corpus (model, backend and precision), for the domain's meta.json: the
    vectors of torch-bf16 and onnx-int8 differ a little from fp32's (explainers.embeddings)."""
    return {
        "model": getattr(encoder, "model_name", type(encoder).__name__),
        "backend": getattr(encoder, "backend", None),
        "fingerprint": getattr(encoder, "fingerprint", None),
    }


def torch_thread_count() -> int:
    import torch

    return int(torch.get_num_threads())


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block and restore them after (None: leave them be)."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _spans(stages: Stages | None) -> Callable[[float, float], contextlib.AbstractContextManager[None]]:
    """`stages.span`, or a no-op when nobody watches."""
    if stages is None:
        return lambda low, high: contextlib.nullcontext()
    return stages.span


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


def build_key(
    pool: Pool,
    *,
    encoder: Any,
    source: str,
    tagger_eval: tuple[list[str], list[dict[str, str]]] | None,
    taggers_builder: Callable[[Path], dict[str, dict[str, Any]]] | None,
    space_meta: Mapping[str, Any] | None,
) -> str:
    """A hash of everything a build's stage outputs depend on: same key, same outputs."""
    from explainers.matching.trainers import TrainConfig

    h = hashlib.sha256()
    parts = [
        f"staging-v{STAGING_VERSION}",
        f"format-v{FORMAT_VERSION}",
        source,
        json.dumps(pool.schema.to_dict(), sort_keys=True),
        data_hash(pool.texts),
        data_hash(json.dumps(lab, sort_keys=True) for lab in pool.labels),
        data_hash(pool.origins or []),
        data_hash(pool.ids or []),
        getattr(encoder, "fingerprint", None) or str(getattr(encoder, "model_name", type(encoder).__name__)),
        json.dumps(TrainConfig().to_dict(), sort_keys=True),
        getattr(taggers_builder, "__qualname__", "fit_taggers"),
        json.dumps(space_meta or {}, sort_keys=True, default=str),
        data_hash(tagger_eval[0]) + data_hash(json.dumps(x, sort_keys=True) for x in tagger_eval[1])
        if tagger_eval
        else "",
    ]
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _lock(folder: Path, *, wait: bool) -> int | None:
    """An exclusive lock on `folder` (a file inside it), held until its descriptor closes; None if taken."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_stale_staging(root: Path, domain_id: str, keep: Path | None = None) -> list[Path]:
    """Remove `<id>.building-*` folders no live build holds (a killed build's, other inputs')."""
    removed = []
    for folder in sorted(Path(root).glob(f"{domain_id}.building-*")):
        if folder == keep or not folder.is_dir():
            continue
        if not (folder / ".lock").exists() and _builder_alive(folder.name):
            continue  # an older version's build (no lock file) whose process still runs
        try:
            fd = _lock(folder, wait=False)
        except OSError:
            continue
        if fd is None:
            continue  # another process is building there
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _builder_alive(name: str) -> bool:
    """Whether the process named in an older build folder (`<id>.building-<pid>-<random>`) runs here."""
    parts = name.rsplit(".building-", 1)[-1].split("-")
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


@contextlib.contextmanager
def _staging(out: Path, key: str | None, log: Log) -> Iterator[Path]:
    """The locked staging folder of this build: `<id>.building-<key>` (resumable) or a private one."""
    suffix = key if key is not None else f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = out.with_name(f"{out.name}.building-{suffix}")
    tmp.mkdir(parents=True, exist_ok=True)
    fd = _lock(tmp, wait=False)
    if fd is None:
        if log:
            log(f"another process is building {out.name} from the same inputs; waiting for it")
        fd = _lock(tmp, wait=True)
    assert fd is not None  # a blocking lock returns once held
    try:
        for stale in remove_stale_staging(out.parent, out.name, keep=tmp):
            if log:
                log(f"removed an abandoned build folder {stale.name}")
        yield tmp
    finally:
        os.close(fd)


class _StageRecord:
    """Which stages of a staging folder are finished, and what they reported (stages.json)."""

    def __init__(self, folder: Path, key: str | None) -> None:
        self.path = folder / "stages.json"
        self.key = key
        self.done: dict[str, Any] = {}
        if key is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("key") == key:
                self.done = dict(saved.get("done", {}))

    def finish(self, stage: str, report: Any = None) -> None:
        self.done[stage] = report
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "done": self.done}, default=str))
        os.replace(tmp, self.path)


def build_domain(
    root: Path, domain_id: str, pool: Pool, *, encoder: Any, resumable: bool = False, **options: Any
) -> Domain:
    """Build root/domain_id atomically and load it (see `_build_domain` for the options).

    An upload's build writes into a folder of its own under root/.staging, renamed into place
    when complete; whatever ends it early (an error, a cancelled job) removes that folder, and a
    process killed mid-build leaves one that `clean_stale_staging` removes at the next start.

    A `resumable` build (the service's default domain) works in `<id>.building-<key>` instead,
    named by a hash of its inputs and locked while it runs: each finished stage is kept there,
    so a build of the same inputs after a kill or a failure resumes, and `remove_stale_staging`
    removes such folders once no build holds them.
    """
    if resumable and options.get("augment") is None:
        key = build_key(
            pool,
            encoder=encoder,
            source=options.get("source", "upload"),
            tagger_eval=options.get("tagger_eval"),
            taggers_builder=options.get("taggers_builder"),
            space_meta=options.get("space_meta"),
        )
        out = child_path(Path(root), domain_id)
        out.parent.mkdir(parents=True, exist_ok=True)
        with _staging(out, key, options.get("log")) as tmp:
            return _build_domain(root, domain_id, pool, encoder=encoder, tmp=tmp, key=key, **options)
    tmp = staging_dir(Path(root), domain_id)
    try:
        return _build_domain(root, domain_id, pool, encoder=encoder, tmp=tmp, key=None, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after success it was renamed: nothing is left there


def _build_domain(
    root: Path,
    domain_id: str,
    pool: Pool,
    *,
    encoder: Any,
    tmp: Path,
    key: str | None = None,
    source: str = "upload",
    augment: Callable[[Pool], tuple[Pool, dict[str, Any]]] | None = None,
    tagger_eval: tuple[list[str], list[dict[str, str]]] | None = None,
    taggers_builder: Callable[[Path], dict[str, dict[str, Any]]] | None = None,
    space_meta: Mapping[str, Any] | None = None,
    finish: Callable[[Path], Mapping[str, Any]] | None = None,
    replace: bool = False,
    log: Log = None,
    stages: Stages | None = None,
    embed_also: Sequence[str] = (),
    task: str | None = None,
    label_names: Mapping[str, str] | None = None,
) -> Domain:
    """Build root/domain_id in `tmp` (renamed into place at the end) and load it.

    With a `key` (a resumable build, `tmp` locked and named by it) finished stages recorded in
    `tmp` are reused. `stages` receives the progress (see the module doc). `embed_also`:
    more texts the later stages embed (a tagger evaluation set), embedded in the embed stage
    with the corpus, on every core. `task` and `label_names` say what the classifiers' labels
    mean in this domain (e.g. star ratings), for people reading its explanations; nothing
    computes with them.

    `finish(folder)` may write more files into the folder and returns more meta.json fields
    (the LLM build's provenance and report)."""
    from explainers.registry import available

    started = time.perf_counter()
    out = child_path(Path(root), domain_id)
    stages = stages or Stages(f"domain {domain_id}", log=log)
    stages.expect(([AUGMENT_STAGE] if augment is not None else []) + list(BUILD_STAGES))
    if key is not None and not replace and (out / META).exists():
        # Another process finished this build while we waited for its lock.
        for name, _ in BUILD_STAGES[:-1]:
            stages.end(name, reused=True)
        shutil.rmtree(tmp, ignore_errors=True)  # ours (we hold its lock), made after theirs was renamed
        return load_stage(out, encoder, stages)
    record = _StageRecord(tmp, key)
    reused = sorted(s for s in record.done if s in dict(BUILD_STAGES))
    if reused and log:
        log(f"resuming an interrupted build of {domain_id}: {', '.join(reused)} already done")
    generation = None
    if augment is not None:
        with stages.stage("augment"):
            pool, generation = augment(pool)
        checkpoint()
        touch_staging(tmp)
    base_file = tmp / "embeddings.npy"
    if "embed" in record.done and base_file.exists():
        base = np.load(base_file)
        remember = getattr(encoder, "remember", None)
        if remember is not None:
            remember(pool.texts, base)
        stages.end("embed", reused=True)
    else:
        in_pool = set(pool.texts)  # once: built per element it cost 9 CPU s on CEBaB, before the encoder ran
        extra = [t for t in dict.fromkeys(embed_also) if t not in in_pool]
        with stages.stage("embed", f"{len(pool) + len(extra)} texts"):
            base = _encode(encoder, list(pool.texts) + extra, build_workers())[: len(pool)]
        np.save(base_file.with_suffix(".tmp.npy"), base)
        os.replace(base_file.with_suffix(".tmp.npy"), base_file)
        record.finish("embed", {"texts": len(pool)})
    checkpoint()
    touch_staging(tmp)
    if "taggers" in record.done and (tmp / "taggers" / META).exists():
        taggers = record.done["taggers"]
        stages.end("taggers", reused=True)
    else:
        with stages.stage("taggers", f"{len(pool.schema.names)} concepts"):
            build_taggers = taggers_builder or (lambda d: fit_taggers(pool, d, tagger_eval, log))
            taggers = build_taggers(tmp / "taggers")
        record.finish("taggers", taggers)
    checkpoint()
    touch_staging(tmp)
    space_dir = tmp / "spaces" / DEFAULT_SPACE
    if "space" in record.done and (space_dir / META).exists():
        space = record.done["space"]
        stages.end("space", reused=True)
    else:
        with stages.stage("space", f"{len(pool.schema.names)} heads, {len(pool.pairs)} pairs"):
            space = train_space(pool, encoder, space_dir, log, base=base, stages=stages)
            if space_meta:
                meta_path = space_dir / META
                meta_path.write_text(
                    json.dumps({**json.loads(meta_path.read_text()), **space_meta}, indent=2, default=str)
                )
        record.finish("space", space)
    checkpoint()
    with stages.stage("save"):
        finished = dict(finish(tmp)) if finish is not None else {}  # e.g. an LLM build's provenance
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
            encoder=encoder_description(encoder),
            build_seconds=round(time.perf_counter() - started, 2),
            resumed_stages=reused,
            **finished,
        )
        checkpoint()
        # The staging records are not part of the domain.
        for leftover in ("stages.json", "embeddings.npy", OWNER):
            (tmp / leftover).unlink(missing_ok=True)
        if replace and out.exists():
            shutil.rmtree(out)
        if out.is_dir() and not (out / META).exists() and (out / CORPUS_FILE).exists():
            _move_into(tmp, out)  # a corpus folder built in place (ensure_corpus_domain)
        else:
            try:
                tmp.rename(out)
            except OSError:  # another build of this domain finished first: keep it
                shutil.rmtree(tmp, ignore_errors=True)
        (out / ".lock").unlink(missing_ok=True)
    return load_stage(out, encoder, stages)


def load_stage(directory: Path, encoder: Any, stages: Stages | None = None) -> Domain:
    """Load a domain folder as a build's `load` stage: its files, then the corpus's embeddings
    (from the encoder's cache), so the first request embeds only its own text."""
    stages = stages or Stages(f"domain {Path(directory).name}")
    stages.expect([LOAD_STAGE])
    with stages.stage("load"):
        domain = load_domain(directory, encoder=encoder)
        domain.space.base_vectors()
    return domain


CORPUS_FILE = "corpus.jsonl"
SCHEMA_FILE = "schema.json"


def _move_into(tmp: Path, out: Path) -> None:
    """Move a finished build's files into an existing folder, meta.json last (it marks the domain done)."""
    for child in sorted(tmp.iterdir(), key=lambda p: p.name == META):
        if child.name == ".lock":
            continue
        target = out / child.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(child, target)
    shutil.rmtree(tmp, ignore_errors=True)


# Labels and pairs by an LLM for a corpus some concept of which no row labels (the caller binds the
# LLM): (rows, schema, stages) -> the pool and build_domain's hooks (explainers.domains.zero_label).
LLMBuild = Callable[[list[dict[str, Any]], ConceptSchema, Stages], tuple[Pool, dict[str, Any]]]


def ensure_corpus_domain(
    folder: Path,
    *,
    encoder: Any,
    log: Log = None,
    stages: Stages | None = None,
    llm_build: LLMBuild | None = None,
) -> Domain:
    """Load a domain folder, or build it in place from the `corpus.jsonl` (and optional `schema.json`) it holds.

    How an operator makes their own corpus the service's default domain (CACE_DEFAULT_DOMAIN=folder):
    the first start builds it (resumable, like every build), later starts load it. A corpus
    without labels for some concept of its `schema.json` (concept definitions instead) is
    labelled, and given pairs, by `llm_build` first; its stages report to the same `stages`.
    """
    folder = Path(folder)
    if (folder / META).exists() or not (folder / CORPUS_FILE).exists():
        return load_stage(folder, encoder, stages)  # a domain, or a FileNotFoundError naming meta.json
    from explainers.domains.domain import DOMAIN_ID

    if not DOMAIN_ID.match(folder.name):
        raise DomainBuildError(
            "default_domain", f"folder name {folder.name!r} must match {DOMAIN_ID.pattern}"
        )
    stages = stages or Stages(f"domain {folder.name}", log=log)
    stages.expect([READ_STAGE, *BUILD_STAGES])  # the whole plan up front: the percent never goes back
    with stages.stage("read", CORPUS_FILE):
        import explainers.matching.trainers  # noqa: F401  (torch's import, counted in a stage)

        schema_file = folder / SCHEMA_FILE
        schema = (
            ConceptSchema.from_dict(json.loads(schema_file.read_text())) if schema_file.exists() else None
        )
        rows = validate_rows((folder / CORPUS_FILE).read_text(encoding="utf-8").splitlines(), schema)
        schema = schema or infer_schema(rows, name=folder.name)
        unlabelled = [c for c in schema.names if not any(c in r["labels"] for r in rows)]
        if unlabelled and llm_build is None:
            raise DomainBuildError(
                "default_domain",
                f"no row of {CORPUS_FILE} labels {unlabelled}: an LLM must label them (configure one: "
                "CACE_LLM_BASE_URL and CACE_LLM_MODEL), or add the labels",
            )
        pool = None if unlabelled else pool_from_rows(rows, schema)
    hooks: dict[str, Any] = {}
    if pool is None:
        assert llm_build is not None  # checked above
        pool, hooks = llm_build(rows, schema, stages)
    return build_domain(
        folder.parent,
        folder.name,
        pool,
        encoder=encoder,
        source=f"{CORPUS_FILE} in {folder.name}",
        log=log,
        stages=stages,
        resumable=True,
        **hooks,
    )
