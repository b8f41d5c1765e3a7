"""A model report: for every concept and (source -> target) direction of a domain, the CaCE per label.

The work is split so a job can run it a batch of texts at a time and resume after a crash:

- `plan_cells` lists the cells of a schema (every concept, every ordered pair of its values);
- `ReportScorer.score` takes a batch of texts with their concept labels, runs ONE counterfactual
  search per (text, concept, target) and scores every distinct text once per classifier: the
  same counterfactuals serve every label, and every classifier of a comparison. Beside each real
  search it runs a *placebo* search: the same nearest-neighbour search in the concept's space,
  among a random subset of the pool as large as the target partition (the concept's labels
  shuffled), so the placebo changes the text as much as the real search, but not the concept;
- `summarize_report` turns the per-text results into cells: CaCE with a bootstrap CI, how many
  texts the intervention changed, a sign-flip permutation test of the real effect against the
  placebo (Holm-corrected over the cells), the calibration's expected error where one exists,
  the cells ranked by effect size and, per cell, the texts it moved most with a counterfactual.

Every step is a pure function of (request, text): the placebo subset is seeded by the cell, so a
re-run batch gives the same numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explainers.classifiers.base import Classifier
from explainers.concepts import ConceptSchema, Intervention
from explainers.estimate import cace, icace_from_predictions
from explainers.types import Counterfactual

# Texts per classifier call: bounded request sizes for endpoint classifiers, bounded memory in process.
PREDICT_CHUNK = 256


@dataclass(frozen=True)
class Cell:
    """One (concept, source -> target) direction of a domain."""

    concept: str
    source: str
    target: str

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def key(self) -> str:
        return f"{self.concept}:{self.source}->{self.target}"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "concept": self.concept, "source": self.source, "target": self.target}


def plan_cells(schema: ConceptSchema, concepts: Sequence[str] | None = None) -> list[Cell]:
    """Every (concept, source -> target) with source != target, in schema order."""
    names = list(dict.fromkeys(concepts)) if concepts is not None else list(schema.names)
    return [Cell(c, s, t) for c in names for s in schema[c].values for t in schema[c].values if s != t]


def _seed(seed: int, key: str) -> int:
    """A per-cell seed stable across processes (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def predict_unique(classifier: Classifier, texts: Sequence[str], chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Predictions for distinct texts, `chunk` texts per call."""
    if not texts:
        return np.zeros((0, len(classifier.labels)))
    parts = [
        np.asarray(classifier.predict_proba(list(texts[i : i + chunk])), float)
        for i in range(0, len(texts), chunk)
    ]
    return np.concatenate(parts)


class ShuffledLabelPlacebo:
    """The concept-space search with the concept's labels shuffled (a random intervention).

    For cell (c, s -> t) and one text, the candidates are a random subset of the pool holding
    each pool text with probability |c = t partition| / |pool| (the target partition's size,
    labels shuffled), drawn afresh for every text from (seed, cell, text); the text gets its K
    nearest candidates in c's space, those sharing its other concepts' labels first (as `match`
    fills), itself excluded. Fresh subsets per text make the texts' placebo effects independent,
    which the sign-flip test needs.
    """

    def __init__(self, space: Any, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self._conf_masks: dict[tuple[str, tuple[tuple[str, str], ...]], np.ndarray] = {}

    def share(self, cell: Cell) -> float:
        n_pool = len(self.space.pool)
        return len(self.space.pool.indices_with(cell.concept, cell.target)) / n_pool if n_pool else 0.0

    def _conf_mask(self, cell: Cell, conf: tuple[tuple[str, str], ...]) -> np.ndarray:
        key = (cell.concept, conf)
        if key not in self._conf_masks:
            labels = self.space.pool.labels
            self._conf_masks[key] = np.array(
                [all(lab.get(c) == v for c, v in conf) for lab in labels], dtype=bool
            )
        return self._conf_masks[key]

    def counterfactuals(
        self, cell: Cell, texts: Sequence[str], labels: Sequence[Mapping[str, str]], k: int
    ) -> list[list[Counterfactual]]:
        share = self.share(cell)
        if share <= 0 or not texts:
            return [[] for _ in texts]
        pool_vecs = np.asarray(self.space.pool_vectors(cell.concept), np.float32)
        queries = np.asarray(self.space.embed(list(texts), cell.concept), np.float32)
        sims = queries @ pool_vecs.T
        confounders = self.space.schema.confounders(cell.concept)
        pool_texts = self.space.pool.texts
        out = []
        for j, text in enumerate(texts):
            rng = np.random.default_rng(_seed(self.seed, f"placebo:{cell.key}:{text}"))
            rows = np.flatnonzero(rng.random(len(pool_texts)) < share)
            conf = tuple(sorted((c, labels[j][c]) for c in confounders if c in labels[j]))
            matched = self._conf_mask(cell, conf)[rows] if conf else np.ones(len(rows), bool)
            # Confounder-matched candidates first, each group nearest first.
            order = np.lexsort((-sims[j, rows], ~matched))
            own = _norm(text)
            picked: list[Counterfactual] = []
            for p in order:
                r = int(rows[p])
                if _norm(pool_texts[r]) == own:
                    continue
                picked.append(Counterfactual(pool_texts[r], similarity=float(sims[j, r]), source_id=str(r)))
                if len(picked) >= k:
                    break
            out.append(picked)
        return out


@dataclass
class ScoreStats:
    """What one `score` call cost."""

    searches: int = 0
    placebo_searches: int = 0
    classifier_calls: int = 0
    classifier_texts: int = 0


class ReportScorer:
    """One counterfactual search per (text, concept, target), scored by every classifier.

    `explainer` must find counterfactual texts (`counterfactuals_batch`, e.g. match, splice,
    approx_match); methods that estimate without counterfactual texts cannot share their
    counterfactuals between labels or classifiers and are refused.
    """

    def __init__(
        self,
        explainer: Any,
        *,
        top_k: int,
        space: Any | None = None,
        placebo: bool = True,
        seed: int = 0,
        keep_counterfactuals: int = 2,
    ) -> None:
        if not hasattr(explainer, "counterfactuals_batch"):
            raise ValueError(
                f"method {getattr(explainer, 'name', explainer)!r} does not find counterfactual texts; "
                "a report needs one that does (match, splice, approx_match, pt_match, generate)"
            )
        if placebo and space is None:
            raise ValueError("the placebo search needs the domain's concept space")
        self.explainer = explainer
        self.top_k = top_k
        self.placebo = ShuffledLabelPlacebo(space, seed) if placebo else None
        self.keep = keep_counterfactuals

    def score(
        self,
        texts: Sequence[str],
        labels: Sequence[Mapping[str, str]],
        cells: Sequence[Cell],
        classifiers: Sequence[Classifier],
        stats: ScoreStats | None = None,
    ) -> list[dict[str, Any]]:
        """Per text: its base predictions and, per cell whose source is the text's label, the ICaCE of
        every classifier (and its placebo ICaCE), the number of counterfactuals, and the ones that
        moved the first classifier most. A text whose label of a concept is unknown is in none of
        that concept's cells."""
        stats = stats if stats is not None else ScoreStats()
        by_cell: dict[Cell, list[int]] = {}
        for i, lab in enumerate(labels):
            for cell in cells:
                if lab.get(cell.concept) == cell.source:
                    by_cell.setdefault(cell, []).append(i)
        found: dict[tuple[int, str], list[Counterfactual]] = {}
        placebo: dict[tuple[int, str], list[Counterfactual]] = {}
        aggregation = getattr(self.explainer, "aggregation", "mean")
        threshold = getattr(self.explainer, "similarity_threshold", None)
        for cell, idx in by_cell.items():
            iv = Intervention(cell.concept, cell.target, cell.source)
            res = self.explainer.counterfactuals_batch(
                [texts[i] for i in idx], [iv] * len(idx), self.top_k, base_labels=[labels[i] for i in idx]
            )
            stats.searches += len(idx)
            for i, (cfs, _details) in zip(idx, res, strict=True):
                found[(i, cell.key)] = cfs
            if self.placebo is not None:
                fake = self.placebo.counterfactuals(
                    cell, [texts[i] for i in idx], [labels[i] for i in idx], self.top_k
                )
                stats.placebo_searches += len(idx)
                for i, cfs in zip(idx, fake, strict=True):
                    placebo[(i, cell.key)] = cfs
        unique = list(
            dict.fromkeys(
                [
                    *texts,
                    *(c.text for v in found.values() for c in v),
                    *(c.text for v in placebo.values() for c in v),
                ]
            )
        )
        row = {t: n for n, t in enumerate(unique)}
        probas = []
        for clf in classifiers:
            probas.append(predict_unique(clf, unique))
            stats.classifier_calls += -(-len(unique) // PREDICT_CHUNK)
            stats.classifier_texts += len(unique)

        def icaces(i: int, cfs: list[Counterfactual]) -> tuple[list[list[float]], list[np.ndarray]]:
            out, preds = [], []
            for proba in probas:
                base = proba[row[texts[i]]]
                cf_pred = proba[[row[c.text] for c in cfs]] if cfs else np.zeros((0, proba.shape[1]))
                sims = np.array([c.similarity if c.similarity is not None else 1.0 for c in cfs], float)
                est = icace_from_predictions(
                    base, cf_pred, similarities=sims, aggregation=aggregation, threshold=threshold
                )
                out.append([float(x) for x in est.icace])
                preds.append(cf_pred)
            return out, preds

        results = []
        for i, text in enumerate(texts):
            cells_out: dict[str, Any] = {}
            for cell in cells:
                if (i, cell.key) not in found:
                    continue
                cfs = found[(i, cell.key)]
                real, preds = icaces(i, cfs)
                entry: dict[str, Any] = {"n": len(cfs), "icace": real}
                if self.placebo is not None:
                    entry["placebo"] = icaces(i, placebo[(i, cell.key)])[0]
                if cfs and self.keep:
                    # The counterfactuals that moved the first classifier most (L1 change of its output).
                    base = probas[0][row[text]]
                    moved = np.abs(preds[0] - base).sum(axis=1)
                    entry["counterfactuals"] = [
                        {
                            "text": cfs[int(j)].text,
                            "similarity": cfs[int(j)].similarity,
                            "prediction": [[float(x) for x in p[int(j)]] for p in preds],
                        }
                        for j in np.argsort(-moved)[: self.keep]
                    ]
                cells_out[cell.key] = entry
            results.append(
                {
                    "base": [[float(x) for x in p[row[text]]] for p in probas],
                    "labels": dict(labels[i]),
                    "cells": cells_out,
                }
            )
        return results


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    p = np.asarray(p_values, float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def sign_flip_p(diffs: np.ndarray, *, n_flips: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value that the mean of paired differences (n, C) is zero, by random sign flips.

    The statistic is the largest |mean| over labels. Under the null (real and placebo
    counterfactuals exchangeable) each text's difference is as likely negated.
    """
    d = np.asarray(diffs, float)
    n = len(d)
    if n < 2:
        return 1.0
    observed = np.abs(d.mean(axis=0)).max()
    rng = np.random.default_rng(seed)
    hits = 0
    block = max(1, min(n_flips, 2_000_000 // n))
    for start in range(0, n_flips, block):
        size = min(block, n_flips - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        stats = np.abs(signs @ d / n).max(axis=1)
        hits += int((stats >= observed - 1e-12).sum())
    return (1 + hits) / (1 + n_flips)


def _vec(labels: Sequence[str], values: Iterable[float]) -> dict[str, float]:
    return {lab: round(float(v), 6) for lab, v in zip(labels, values, strict=True)}


def cell_arrays(
    rows: Iterable[Mapping[str, Any]], cells: Sequence[Cell]
) -> tuple[dict[str, dict[str, list[Any]]], int]:
    """Per cell key: the texts' entries (icace per classifier, placebo, n, counterfactuals) and the text.

    `rows` are stored items: {"index", "status", "payload", "result"}; returns (per cell, failed items).
    """
    per: dict[str, dict[str, list[Any]]] = {c.key: {"entries": [], "items": []} for c in cells}
    failed = 0
    for r in rows:
        if r.get("status") == "failed":
            failed += 1
        res = r.get("result") if r.get("status") == "done" else None
        if not res:
            continue
        for key, entry in res["cells"].items():
            if key in per:
                per[key]["entries"].append(entry)
                per[key]["items"].append((r.get("index"), r.get("payload") or {}, res))
    return per, failed


def summarize_report(
    rows: Iterable[Mapping[str, Any]],
    *,
    labels: Sequence[str],
    cells: Sequence[Cell],
    skipped: Sequence[Mapping[str, Any]] = (),
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_flips: int = 2000,
    top_texts: int = 3,
    calibration: Callable[[Cell, np.ndarray], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The report from per-text results (see `ReportScorer.score`): cells ranked by effect size.

    A cell's effect size is the largest |CaCE| over labels (probability moved to or from one
    label). Texts with no counterfactual (none found) are counted but carry no estimate.
    """
    labels = list(labels)
    per, failed = cell_arrays(rows, cells)
    skipped = list(skipped)
    out_cells: list[dict[str, Any]] = []
    for cell in cells:
        data = per[cell.key]
        entries, items = data["entries"], data["items"]
        if not entries:
            if not any(s.get("key") == cell.key for s in skipped):
                skipped.append(
                    {**cell.as_dict(), "reason": f"no text of the sample has {cell.concept}={cell.source!r}"}
                )
            continue
        keep = [j for j, e in enumerate(entries) if e["n"] > 0]
        if not keep:
            skipped.append(
                {
                    **cell.as_dict(),
                    "reason": f"no counterfactual found for any of the {len(entries)} texts with "
                    f"{cell.concept}={cell.source!r}",
                }
            )
            continue
        real = np.array([entries[j]["icace"][0] for j in keep], float)
        est = cace(real, confidence=confidence, n_boot=n_boot, seed=_seed(seed, cell.key) % 2**32)
        effect_at = int(np.argmax(np.abs(est.cace)))
        item: dict[str, Any] = {
            **cell.as_dict(),
            "n_texts": len(entries),
            "n_changed": len(keep),
            "cace": _vec(labels, est.cace),
            "ci_low": _vec(labels, est.ci_low),
            "ci_high": _vec(labels, est.ci_high),
            "effect": round(float(abs(est.cace[effect_at])), 6),
            "effect_label": labels[effect_at],
        }
        if "placebo" in entries[keep[0]]:
            fake = np.array([entries[j]["placebo"][0] for j in keep], float)
            item["placebo"] = {
                "cace": _vec(labels, fake.mean(axis=0)),
                "p_value": sign_flip_p(real - fake, n_flips=n_flips, seed=_seed(seed, "flip:" + cell.key)),
            }
        bases = np.array([items[j][2]["base"][0] for j in keep], float)
        item["calibration"] = calibration(cell, bases) if calibration is not None else None
        moved = np.abs(real).sum(axis=1)
        item["top_texts"] = []
        for j in np.argsort(-moved)[:top_texts]:
            index, payload, res = items[keep[int(j)]]
            entry = entries[keep[int(j)]]
            item["top_texts"].append(
                {
                    "index": index,
                    "id": payload.get("id"),
                    "text": payload.get("text"),
                    "base_prediction": _vec(labels, res["base"][0]),
                    "icace": _vec(labels, entry["icace"][0]),
                    "counterfactuals": [
                        {"text": c["text"], "prediction": _vec(labels, c["prediction"][0])}
                        for c in entry.get("counterfactuals", [])
                    ],
                }
            )
        out_cells.append(item)
    tested = [c for c in out_cells if "placebo" in c]
    for c, adj in zip(tested, holm([c["placebo"]["p_value"] for c in tested]), strict=True):
        c["placebo"]["p_holm"] = adj
        c["placebo"]["above_noise"] = adj < alpha
    out_cells.sort(key=lambda c: -c["effect"])
    for rank, c in enumerate(out_cells, start=1):
        c["rank"] = rank
    return {
        "kind": "report",
        "labels": labels,
        "confidence": confidence,
        "alpha": alpha,
        "correction": "holm",
        "n_failed": failed,
        "cells": out_cells,
        "skipped": skipped,
    }


def calibration_lookup(
    calibration: Any, labels: Sequence[str]
) -> Callable[[Cell, np.ndarray], dict[str, Any] | None]:
    """Per cell: the calibration's chosen estimator, expected ICaCE error and conformal half-width per label,
    and how the cell's texts compare with the calibration's pairs (their base predictions: explainers/estimators/shift.py).

    These describe one text's ICaCE from the calibrated `auto` estimator on this cell's held-out
    pairs: how far a single counterfactual estimate typically is from the truth here; `shift` says
    for how many of the cell's texts the calibration has few pairs like them (`share_outside`).
    """

    def lookup(cell: Cell, bases: np.ndarray) -> dict[str, Any] | None:
        expected = calibration.expected_error(cell.concept, cell.direction)
        try:
            half = calibration.intervals.halfwidth(cell.concept, cell.direction)
        except (KeyError, ValueError):
            half = None
        if expected is None and half is None:
            return None
        return {
            "estimator": calibration.estimator_for(cell.concept, cell.direction),
            "expected_error": expected,
            "interval_halfwidth": _vec(labels, half) if half is not None else None,
            "coverage": calibration.intervals.coverage,
            "shift": (
                calibration.situation.compare(bases)
                if getattr(calibration, "situation", None) is not None and len(bases)
                else None
            ),
        }

    return lookup
