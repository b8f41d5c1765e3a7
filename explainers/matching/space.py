"""A concept space: the self-describing artifact matching explainers search.

Layout of a space directory:

    meta.json            kind "concept_space": encoder, trainer, config, data hash, versions,
                         diagnostics (nearest-counterfactual hit rate), stacking weights
    schema.json          the ConceptSchema
    pool.jsonl           pool texts, labels, ids, origins
    pairs.json           counterfactual pairs in the pool (base, cf, concept)
    heads/c<i>.npz       projection head of the i-th concept (trainer "head")
    encoders/c<i>/       a fine-tuned sentence-transformers model (trainer "full")
    index/c<i>/v<j>.faiss  FAISS index over the pool texts whose i-th concept has its j-th value,
                         in that concept's space (+ .json, .rows.npy)

Concept and value names are data: files are named by position, and meta.json's `files` maps
each name to its slug (format 2). A format-1 space (files named after concepts and values) still
loads, every path checked to stay in the folder (`explainers.artifacts.child_path`).

One space per treated concept, as in the paper: matching for an intervention on c embeds
the query with c's projection and searches the partition of pool texts whose c equals the
target value, optionally only among those whose confounders equal the query's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explainers.artifacts import FORMAT_VERSIONS, META, child_path, data_hash, read_meta, slugs, write_meta
from explainers.concepts import ConceptSchema
from explainers.data.pool import Pool
from explainers.embeddings import Encoder, weights_fingerprint
from explainers.matching.index import DEFAULT_APPROX_THRESHOLD, PartitionIndex
from explainers.matching.trainers import HeadProjection, project
from explainers.progress import checkpoint

KIND = "concept_space"
# 2: files named by concept/value position (meta.json `files`); 1: named after the concepts and values.
FORMAT_VERSION = FORMAT_VERSIONS[KIND]  # 2 (1 still loads: artifacts.READABLE_VERSIONS)


def file_names(schema: ConceptSchema) -> dict[str, dict[str, Any]]:
    """Per concept: its file slug and its values' slugs (what a format-2 space records in `files`)."""
    return {
        c: {"slug": slug, "values": slugs(schema[c].values, "v")}
        for c, slug in slugs(schema.names, "c").items()
    }


def _layout(directory: Path, meta: Mapping[str, Any], schema: ConceptSchema) -> dict[str, dict[str, Any]]:
    """The name -> file slug map a saved space uses (format 1: the names themselves)."""
    version = int(meta.get("format_version", 1))
    if version == FORMAT_VERSION:
        files = meta.get("files") or {}
        if set(files) != set(schema.names):
            raise ValueError(f"{directory}: meta.json `files` does not list the schema's concepts")
        return {c: {"slug": str(f["slug"]), "values": dict(f["values"])} for c, f in files.items()}
    if version == 1:
        return {c: {"slug": c, "values": {v: v for v in schema[c].values}} for c in schema.names}
    raise ValueError(
        f"{directory}: space format {version} is not one this library reads (1, {FORMAT_VERSION})"
    )


@dataclass
class Match:
    """One pool text found for a query: its pool row, similarity and text."""

    row: int
    score: float
    text: str


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def pool_hash(pool: Pool) -> str:
    return data_hash(
        t + "\t" + json.dumps(lab, sort_keys=True) for t, lab in zip(pool.texts, pool.labels, strict=True)
    )


class ConceptSpace:
    """Pool + per-concept projections + per-(concept, value) FAISS partitions."""

    def __init__(
        self,
        pool: Pool,
        encoder: Encoder,
        *,
        heads: Mapping[str, HeadProjection] | None = None,
        encoders: Mapping[str, Encoder] | None = None,
        meta: dict[str, Any] | None = None,
        index_kind: str = "auto",
        approx_threshold: int = DEFAULT_APPROX_THRESHOLD,
        base_vectors: np.ndarray | None = None,
    ) -> None:
        self.pool = pool
        self.schema: ConceptSchema = pool.schema
        self.encoder = encoder
        self.heads = dict(heads or {})
        self.encoders = dict(encoders or {})
        self.meta = dict(meta or {})
        self.index_kind = index_kind
        self.approx_threshold = approx_threshold
        self._base = base_vectors
        self.vectors: dict[str, np.ndarray] = {}
        self.indices: dict[tuple[str, str], PartitionIndex] = {}
        self.rows: dict[tuple[str, str], np.ndarray] = {}
        self._conf_cache: dict[tuple, np.ndarray] = {}
        self._label_codes: dict[str, tuple[np.ndarray, dict[str | None, int]]] = {}

    # -- embedding --------------------------------------------------------------------------
    def base_vectors(self) -> np.ndarray:
        if self._base is None:
            self._base = self.encoder.encode(self.pool.texts)
        return self._base

    def embed(self, texts: Sequence[str], concept: str) -> np.ndarray:
        """Unit vectors of `texts` in concept `concept`'s space."""
        if concept in self.encoders:
            return self.encoders[concept].encode(texts)
        return project(self.encoder.encode(texts), self.heads.get(concept))

    def pool_vectors(self, concept: str) -> np.ndarray:
        if concept not in self.vectors:
            if concept in self.encoders:
                self.vectors[concept] = self.encoders[concept].encode(self.pool.texts)
            else:
                self.vectors[concept] = project(self.base_vectors(), self.heads.get(concept))
        return self.vectors[concept]

    # -- indexing ---------------------------------------------------------------------------
    def build_indices(self) -> None:
        for c in self.schema.names:
            vecs = self.pool_vectors(c)
            for v in self.schema[c].values:
                rows = np.asarray(self.pool.indices_with(c, v), dtype=np.int64)
                self.rows[(c, v)] = rows
                self.indices[(c, v)] = PartitionIndex.build(
                    vecs[rows] if len(rows) else np.zeros((0, vecs.shape[1]), np.float32),
                    kind=self.index_kind,
                    approx_threshold=self.approx_threshold,
                )
        self._conf_cache.clear()

    def _codes(self, concept: str) -> tuple[np.ndarray, dict[str | None, int]]:
        """Each pool text's value of `concept` as an integer code (None, not labelled, has one too)."""
        if concept not in self._label_codes:
            vocab: dict[str | None, int] = {}
            codes = np.fromiter(
                (vocab.setdefault(lab.get(concept), len(vocab)) for lab in self.pool.labels),
                dtype=np.int32,
                count=len(self.pool.labels),
            )
            self._label_codes[concept] = (codes, vocab)
        return self._label_codes[concept]

    def _allowed(self, concept: str, value: str, confounders: Mapping[str, str]) -> np.ndarray:
        """Positions in the (concept, value) partition whose texts have every confounder's value.

        Compared as integer codes over the whole partition at once: a loop over its rows in
        Python cost a CEBaB build 7 CPU s in the hit-rate diagnostics (the same positions)."""
        key = (concept, value, tuple(sorted(confounders.items())))
        if key not in self._conf_cache:
            rows = self.rows[(concept, value)]
            ok = np.ones(len(rows), dtype=bool)
            for c, v in confounders.items():
                codes, vocab = self._codes(c)
                want = vocab.get(v)
                if want is None:  # no text has this value
                    ok[:] = False
                    break
                ok &= codes[rows] == want
            self._conf_cache[key] = np.flatnonzero(ok).astype(np.int64)
        return self._conf_cache[key]

    def search(
        self,
        query: str | np.ndarray,
        concept: str,
        value: str,
        k: int,
        *,
        confounders: Mapping[str, str] | None = None,
        threshold: float | None = None,
        exclude_above: float | None = None,
        exclude_text: str | None = None,
    ) -> list[Match]:
        """Top-k pool texts with `concept` = `value` nearest the query in the concept's space.

        A string query is never returned as its own match: pool texts equal to it (case and
        whitespace aside) are dropped. `exclude_above` also drops anything at or above that
        cosine; use it with care in a trained space, which pulls true counterfactuals close.
        """
        if isinstance(query, str) and exclude_text is None:
            exclude_text = query
        if (concept, value) not in self.indices:
            raise KeyError(f"no partition for {concept}={value}; the schema has {self.schema.names}")
        vec = self.embed([query], concept)[0] if isinstance(query, str) else np.asarray(query, np.float32)
        return self.search_batch(
            vec.reshape(1, -1),
            concept,
            value,
            k,
            confounders=confounders,
            threshold=threshold,
            exclude_above=exclude_above,
            exclude_texts=[exclude_text],
        )[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        concept: str,
        value: str,
        k: int,
        *,
        confounders: Mapping[str, str] | None = None,
        threshold: float | None = None,
        exclude_above: float | None = None,
        exclude_texts: Sequence[str | None] | None = None,
    ) -> list[list[Match]]:
        """`search` for many query vectors (n, d) with one target partition and confounder filter: one FAISS call.

        `exclude_texts[i]` (the i-th query's own text, or None) is dropped from its matches.
        """
        if (concept, value) not in self.indices:
            raise KeyError(f"no partition for {concept}={value}; the schema has {self.schema.names}")
        vectors = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
        excludes = list(exclude_texts) if exclude_texts is not None else [None] * len(vectors)
        allowed = self._allowed(concept, value, confounders) if confounders else None
        extra = 2 if any(t is not None for t in excludes) else 0
        found = self.indices[(concept, value)].search_batch(
            vectors, k + extra, allowed=allowed, threshold=threshold, exclude_above=exclude_above
        )
        part_rows = self.rows[(concept, value)]
        out = []
        for hits, exclude_text in zip(found, excludes, strict=True):
            rows = part_rows[hits.ids]
            ms = [Match(int(r), float(s), self.pool.texts[r]) for r, s in zip(rows, hits.scores, strict=True)]
            if exclude_text is not None:
                key = _norm(exclude_text)
                ms = [m for m in ms if _norm(m.text) != key]
            out.append(ms[:k])
        return out

    # -- diagnostics ------------------------------------------------------------------------
    def nearest_counterfactual_hit_rate(self, concept: str) -> float | None:
        """Share of pool pairs on `concept` whose counterfactual is the base's nearest text in the target partition.

        Searched among texts with the target value and the base's confounders, the query itself
        and its exact duplicates excluded. A diagnostic: does the space rank true edits first?
        """
        pairs = [(b, c) for b, c, con in self.pool.pairs if con == concept]
        if not pairs:
            return None
        vecs = self.pool_vectors(concept)
        conf = self.schema.confounders(concept)
        texts = self.pool.texts
        # Pairs sharing a target value and confounder values search one allow-list: one FAISS call
        # for each such group instead of one per pair (the same hits; a first start's largest cost).
        groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, int]]] = {}
        for b, cf in pairs:
            checkpoint()  # one search per pair: a cancelled build stops here too
            lab = self.pool.labels[b]
            key = (self.pool.labels[cf][concept], tuple((c, lab[c]) for c in conf))
            groups.setdefault(key, []).append((b, cf))
        hits = 0
        for (target, confounders), members in groups.items():
            found = self.search_batch(
                vecs[[b for b, _ in members]],
                concept,
                target,
                1,
                confounders=dict(confounders),
                exclude_texts=[texts[b] for b, _ in members],
            )
            for (_, cf), ms in zip(members, found, strict=True):
                hits += bool(ms) and (ms[0].row == cf or texts[ms[0].row] == texts[cf])
        return round(hits / len(pairs), 4)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: Path, **meta_fields: Any) -> dict[str, Any]:
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "schema.json").write_text(json.dumps(self.schema.to_dict(), indent=1))
        with open(tmp / "pool.jsonl", "w", encoding="utf-8") as f:
            for i, (t, lab) in enumerate(zip(self.pool.texts, self.pool.labels, strict=True)):
                f.write(
                    json.dumps(
                        {
                            "text": t,
                            "labels": lab,
                            "id": self.pool.ids[i] if self.pool.ids else str(i),
                            "origin": self.pool.origins[i] if self.pool.origins else str(i),
                            **(
                                {"original": self.pool.originals[i]}
                                if self.pool.originals is not None
                                else {}
                            ),
                            **({"trained": self.pool.trained[i]} if self.pool.trained is not None else {}),
                        }
                    )
                    + "\n"
                )
        (tmp / "pairs.json").write_text(json.dumps(self.pool.pairs))
        files = file_names(self.schema)
        for c, h in self.heads.items():
            (tmp / "heads").mkdir(exist_ok=True)
            h.save(child_path(tmp, "heads", f"{files[c]['slug']}.npz"))
        for c, enc in self.encoders.items():
            shutil.copytree(enc.path, child_path(tmp, "encoders", files[c]["slug"]))
        if not self.indices:
            self.build_indices()
        base_fingerprint = getattr(self.encoder, "fingerprint", None)
        if self._base is not None and base_fingerprint:
            # The corpus's embeddings travel with the space: loading it never re-embeds the corpus
            # (a fresh machine-wide cache, another host) before the first request can be served.
            np.save(tmp / "base.npy", np.asarray(self._base, dtype=np.float32))
        index_info = {}
        for (c, v), idx in self.indices.items():
            slug, value_slug = files[c]["slug"], files[c]["values"][v]
            idx.save(child_path(tmp, "index", slug, f"{value_slug}.faiss"))
            np.save(child_path(tmp, "index", slug, f"{value_slug}.rows.npy"), self.rows[(c, v)])
            index_info[f"{c}={v}"] = {"kind": idx.kind, **idx.info}
        fields = {
            **self.meta,
            **meta_fields,
            "pool_size": len(self.pool),
            "pool_hash": pool_hash(self.pool),
            "encoder": self.encoder.model_name,
            "index": index_info,
            "index_kind": self.index_kind,
            "approx_threshold": self.approx_threshold,
            "base_fingerprint": base_fingerprint if self._base is not None else None,
            "format_version": FORMAT_VERSION,
            "files": files,
        }
        fields.pop("kind", None)
        fields.pop("created_at", None)
        fields.pop("library_versions", None)
        meta = write_meta(tmp, KIND, **fields)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        self.meta = meta
        return meta

    def update_meta(self, directory: Path, **fields: Any) -> None:
        """Add fields (e.g. stacking weights fit later) to a saved space's meta.json."""
        path = Path(directory) / META
        meta = json.loads(path.read_text())
        meta.update(fields)
        path.write_text(json.dumps(meta, indent=2, default=str))
        self.meta = meta

    @classmethod
    def load(cls, directory: Path, encoder: Encoder | None = None) -> ConceptSpace:
        directory = Path(directory)
        meta = read_meta(directory, KIND)
        schema = ConceptSchema.from_dict(json.loads((directory / "schema.json").read_text()))
        texts, labels, ids, origins = [], [], [], []
        originals: list[bool] = []
        trained: list[bool] = []
        with open(directory / "pool.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(row["labels"])
                ids.append(row["id"])
                origins.append(row["origin"])
                if "original" in row:
                    originals.append(bool(row["original"]))
                if "trained" in row:
                    trained.append(bool(row["trained"]))
        pairs = [tuple(p) for p in json.loads((directory / "pairs.json").read_text())]
        pool = Pool(
            texts,
            labels,
            schema,
            ids=ids,
            origins=origins,
            pairs=pairs,
            # Folders saved before these columns existed have neither: the pool then says nothing.
            originals=originals if len(originals) == len(texts) else None,
            trained=trained if len(trained) == len(texts) else None,
        )
        layout = _layout(directory, meta, schema)
        heads, encoders = {}, {}
        for c, names in layout.items():
            head = child_path(directory, "heads", f"{names['slug']}.npz")
            if head.exists():
                heads[c] = HeadProjection.load(head)
            tuned = child_path(directory, "encoders", names["slug"])
            if tuned.is_dir():
                encoders[c] = Encoder(str(tuned))
        space = cls(
            pool,
            encoder or Encoder(meta.get("encoder", "sentence-transformers/all-MiniLM-L6-v2")),
            heads=heads,
            encoders=encoders,
            meta=meta,
            index_kind=meta.get("index_kind", "auto"),
            approx_threshold=meta.get("approx_threshold", DEFAULT_APPROX_THRESHOLD),
        )
        base_file = directory / "base.npy"
        saved_by, running = meta.get("base_fingerprint"), getattr(space.encoder, "fingerprint", None)
        # The saved corpus vectors serve whenever the same model made them, whatever its backend (a
        # domain built with fp32 and loaded where the default is bf16): they are the vectors the
        # space's indices were built from, and re-embedding the corpus would cost a first start.
        if (
            base_file.exists()
            and saved_by
            and running
            and weights_fingerprint(saved_by) == weights_fingerprint(running)
        ):
            base = np.load(base_file)
            if base.shape[0] == len(pool):
                space._base = base
                remember = getattr(space.encoder, "remember", None)
                if remember is not None:
                    remember(pool.texts, base, borrowed=saved_by != running)
        for c in schema.names:
            slug = layout[c]["slug"]
            for v in schema[c].values:
                value_slug = layout[c]["values"][v]
                space.indices[(c, v)] = PartitionIndex.load(
                    child_path(directory, "index", slug, f"{value_slug}.faiss")
                )
                space.rows[(c, v)] = np.load(child_path(directory, "index", slug, f"{value_slug}.rows.npy"))
        space.directory = directory
        return space

    directory: Path | None = None


def list_spaces(root: Path) -> list[dict[str, Any]]:
    """Every space under root (one directory each) with the headline facts of its meta.json."""
    out = []
    for d in sorted(Path(root).glob("*")):
        if (d / META).exists():
            try:
                meta = read_meta(d, KIND)
            except ValueError:
                continue
            out.append(
                {
                    "name": d.name,
                    "path": str(d),
                    "created_at": meta.get("created_at"),
                    "trainer": meta.get("trainer"),
                    "pool_size": meta.get("pool_size"),
                    "train_split": meta.get("train_split"),
                    "hit_rate": meta.get("diagnostics", {}).get("hit_rate"),
                }
            )
    return out


def delete_space(root: Path, name: str) -> bool:
    """Remove a space directory; False if there was none. Refuses paths outside root."""
    root = Path(root).resolve()
    d = (root / name).resolve()
    if d.parent != root:
        raise ValueError(f"space name {name!r} escapes {root}")
    if not (d / META).exists():
        return False
    read_meta(d, KIND)
    shutil.rmtree(d)
    return True
