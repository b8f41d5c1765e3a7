"""Explainers over a concept space: matching, pair-transfer, doubly-robust matching, stacking.

- `MatchingExplainer` ("match"): the K pool texts nearest the query in the treated
  concept's space, among those with the target value (and, by default, the query's
  confounder labels, topped up without that filter when fewer than K exist).
- `MatchDRExplainer` ("match_dr"): matching plus a regression adjustment. An outcome
  model g(labels) -> classifier output (ridge on one-hot concept labels, fit on the pool's
  predictions) corrects each match for the labels it got wrong:
  ICaCE = mean_k [f(x_k) + g(L*) - g(L_k)] - f(x), L* = the query's labels with c := target.
- `PairTransferExplainer` ("pair_transfer"): the mean classifier output change over the K
  pool counterfactual pairs (human edits, or generations made at training time) on the
  same concept and direction whose *source* text is nearest the query. It estimates the
  effect of the edit rather than the level after it, which is what ICaCE asks.
  With `scale="logit"` ("pair_transfer_logit") the pairs' changes are averaged in
  log-probability space and applied to the query's own prediction (softmax(log f(x) + mean
  delta) - f(x)): for a classifier that is close to additive in its logits, an edit moves the
  logits by about the same amount whatever the text, while the change in probability depends
  on where the text starts (a text already at 5 stars cannot gain much 5-star probability).
- `StackedExplainer` ("stacked"): a non-negative weighted sum of component estimates
  (match, pair_transfer, s_learner by default): a fixed-weight view over the same NNLS
  primitives the calibration uses (`explainers.estimators.crossfit`: `fit_weights`, `combine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np
from sklearn.linear_model import Ridge

from explainers.classifiers.base import Classifier
from explainers.concepts import Intervention
from explainers.estimators.crossfit import combine
from explainers.labels import labels_of, source_value, tagged
from explainers.matching.space import ConceptSpace
from explainers.pool_kernel import PoolScores, one_hot
from explainers.types import Cost, Counterfactual, CounterfactualExplainer, Explainer, Explanation, Lifecycle

CONFOUNDER_MODES = ("fill", "require", "ignore")


class MatchingExplainer(CounterfactualExplainer):
    """Top-K nearest pool texts with the target value in the treated concept's space."""

    name = "match"
    nested_top_k = True  # the K nearest, nearest first (confounder-matched ones, then the fill)

    def __init__(
        self,
        space: ConceptSpace,
        *,
        confounders: str = "fill",
        exclude_above: float | None = None,
        taggers: Any | None = None,
        aggregation: str = "mean",
        similarity_threshold: float | None = None,
    ) -> None:
        super().__init__(aggregation=aggregation, similarity_threshold=similarity_threshold)
        if confounders not in CONFOUNDER_MODES:
            raise ValueError(f"confounders must be one of {CONFOUNDER_MODES}")
        self.space = space
        self.confounders = confounders
        self.exclude_above = exclude_above
        self.taggers = taggers

    def _load(self) -> None:
        # Each concept's projected pool (one encoder pass over the corpus, then a projection):
        # otherwise the first explanation of each concept pays for it.
        for concept in self.space.schema.names:
            self.space.pool_vectors(concept)

    def _confounder_labels(
        self, text: str, concept: str, base_labels: Mapping[str, str] | None
    ) -> dict[str, str]:
        if self.confounders == "ignore" or (base_labels is None and self.taggers is None):
            return {}
        labels = labels_of(text, base_labels, self.taggers, self.name)
        return {c: labels[c] for c in self.space.schema.confounders(concept) if c in labels}

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        self.space.schema.validate(intervention)
        c, v = intervention.concept, intervention.target
        vec = self.space.embed([text], c)[0]
        conf = self._confounder_labels(text, c, base_labels)
        found = self.space.search(
            vec, c, v, top_k, confounders=conf or None, exclude_above=self.exclude_above, exclude_text=text
        )
        matched = len(found)
        if conf and matched < top_k and self.confounders == "fill":
            seen = {m.row for m in found}
            extra = self.space.search(
                vec, c, v, top_k + matched, exclude_above=self.exclude_above, exclude_text=text
            )
            found += [m for m in extra if m.row not in seen][: top_k - matched]
        return self._result(found, bool(conf), matched)

    def counterfactuals_batch(
        self,
        texts: Sequence[str],
        interventions: Sequence[Intervention],
        top_k: int,
        *,
        base_labels: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[tuple[list[Counterfactual], dict[str, Any]]]:
        """`counterfactuals()` for many texts: one tagger call, one encoder call per concept, and one
        FAISS search per (concept, target, confounder labels) group, with per-text results unchanged."""
        for iv in interventions:
            self.space.schema.validate(iv)
        n = len(texts)
        labels = tagged(texts, base_labels, self.taggers if self.confounders != "ignore" else None)
        by_concept: dict[str, list[int]] = {}
        for i, iv in enumerate(interventions):
            by_concept.setdefault(iv.concept, []).append(i)
        vecs: dict[int, np.ndarray] = {}
        for c, idx in by_concept.items():
            for i, v in zip(idx, self.space.embed([texts[i] for i in idx], c), strict=True):
                vecs[i] = v
        confs = [self._confounder_labels(texts[i], interventions[i].concept, labels[i]) for i in range(n)]
        groups: dict[tuple, list[int]] = {}
        for i, iv in enumerate(interventions):
            groups.setdefault((iv.concept, iv.target, tuple(sorted(confs[i].items()))), []).append(i)
        found: dict[int, list[Any]] = {}
        for (c, v, conf), idx in groups.items():
            hits = self.space.search_batch(
                np.stack([vecs[i] for i in idx]),
                c,
                v,
                top_k,
                confounders=dict(conf) or None,
                exclude_above=self.exclude_above,
                exclude_texts=[texts[i] for i in idx],
            )
            found.update(zip(idx, hits, strict=True))
        matched = {i: len(found[i]) for i in range(n)}
        if self.confounders == "fill":  # top up short confounder-matched lists, as counterfactuals() does
            short: dict[tuple, list[int]] = {}
            for i in range(n):
                if confs[i] and len(found[i]) < top_k:
                    iv = interventions[i]
                    short.setdefault((iv.concept, iv.target, top_k + len(found[i])), []).append(i)
            for (c, v, k), idx in short.items():
                extra = self.space.search_batch(
                    np.stack([vecs[i] for i in idx]),
                    c,
                    v,
                    k,
                    exclude_above=self.exclude_above,
                    exclude_texts=[texts[i] for i in idx],
                )
                for i, more in zip(idx, extra, strict=True):
                    seen = {m.row for m in found[i]}
                    found[i] = found[i] + [m for m in more if m.row not in seen][: top_k - len(found[i])]
        return [self._result(found[i], bool(confs[i]), matched[i]) for i in range(n)]

    def _result(
        self, found: list[Any], conf: bool, matched: int
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        cfs = [Counterfactual(text=m.text, similarity=m.score, source_id=self._pool_id(m.row)) for m in found]
        details = {
            "space": self.space.meta.get("name"),
            "confounder_matched": matched if conf else None,
            "rows": [m.row for m in found],
        }
        return cfs, details

    def _pool_id(self, row: int) -> str:
        ids = self.space.pool.ids
        return ids[row] if ids else str(row)


class MatchDRExplainer(MatchingExplainer):
    """Matching with a regression adjustment for the matches' leftover label differences."""

    name = "match_dr"
    nested_top_k = False  # its explain() adds a regression adjustment to the counterfactuals' estimate

    def __init__(self, space: ConceptSpace, *, alpha: float = 1.0, **kw: Any) -> None:
        kw.setdefault("confounders", "ignore")
        super().__init__(space, **kw)
        self.alpha = alpha
        self.scores = PoolScores(space.pool)
        self.x_pool = one_hot(space.pool.labels, space.schema)
        self._fitted: tuple[int, Ridge] | None = None

    def _close(self) -> None:
        self.scores.clear()
        self._fitted = None

    def _outcome_model(self, classifier: Classifier) -> Ridge:
        if self._fitted is None or self._fitted[0] != id(classifier):
            self._fitted = (
                id(classifier),
                Ridge(alpha=self.alpha).fit(self.x_pool, self.scores.get(classifier)),
            )
        return self._fitted[1]

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        exp = super().explain(text, intervention, classifier, top_k, base_labels=base_labels)
        return self._adjust(exp, text, intervention, classifier, base_labels)

    def explain_batch(
        self,
        texts: Sequence[str],
        interventions: Sequence[Intervention],
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[Explanation]:
        labels = tagged(texts, base_labels, self.taggers)
        exps = super().explain_batch(texts, interventions, classifier, top_k, base_labels=labels)
        return [
            self._adjust(e, t, iv, classifier, lab)
            for e, t, iv, lab in zip(exps, texts, interventions, labels, strict=True)
        ]

    def _adjust(
        self,
        exp: Explanation,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        base_labels: Mapping[str, str] | None,
    ) -> Explanation:
        rows = exp.details.get("rows") or []
        if not rows or (base_labels is None and self.taggers is None):
            return exp
        labels = labels_of(text, base_labels, self.taggers, self.name)
        wanted = dict(labels, **{intervention.concept: intervention.target})
        g = self._outcome_model(classifier)
        g_star = g.predict(one_hot([wanted], self.space.schema))[0]
        g_matches = g.predict(self.x_pool[rows])
        correction = (g_star[None, :] - g_matches).mean(axis=0)
        exp.icace = exp.icace + correction
        exp.details["adjustment"] = [round(float(x), 5) for x in correction]
        return exp


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, float), 1e-6, None))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class PairTransferExplainer(Lifecycle):
    """Mean output change over the K pool pairs (same concept, same direction) nearest the query."""

    name = "pair_transfer"

    def __init__(
        self,
        space: ConceptSpace,
        *,
        weighting: str = "mean",
        taggers: Any | None = None,
        max_cached_classifiers: int = 4,
        scale: str = "proba",
    ) -> None:
        if weighting not in ("mean", "similarity"):
            raise ValueError("weighting must be 'mean' or 'similarity'")
        if scale not in ("proba", "logit"):
            raise ValueError("scale must be 'proba' or 'logit'")
        self.scale = scale
        if scale == "logit":
            self.name = "pair_transfer_logit"
        self.space = space
        self.weighting = weighting
        self.taggers = taggers
        self.max_cached = max_cached_classifiers
        self._dirs: dict[tuple[str, str, str], tuple[np.ndarray, faiss.Index]] = {}
        self._preds: dict[int, tuple[Classifier, dict[int, np.ndarray]]] = {}

    def _load(self) -> None:
        for concept in self.space.schema.names:  # as MatchingExplainer: the projected pools, up front
            self.space.pool_vectors(concept)

    def _close(self) -> None:
        # Cached predictions hold the classifiers that made them (and so their clients).
        self._preds.clear()
        self._dirs.clear()

    def _pool_id(self, row: int) -> str:
        ids = self.space.pool.ids
        return ids[row] if ids else str(row)

    def _direction(self, concept: str, source: str, target: str) -> tuple[np.ndarray, faiss.Index] | None:
        key = (concept, source, target)
        if key not in self._dirs:
            labels = self.space.pool.labels
            pairs = np.array(
                [
                    (b, cf)
                    for b, cf, con in self.space.pool.pairs
                    if con == concept
                    and labels[b].get(concept) == source
                    and labels[cf].get(concept) == target
                ],
                dtype=np.int64,
            ).reshape(-1, 2)
            vecs = self.space.pool_vectors(concept)
            index: Any = faiss.IndexFlatIP(vecs.shape[1])
            if len(pairs):
                index.add(np.ascontiguousarray(vecs[pairs[:, 0]]))
            self._dirs[key] = (pairs, index)
        pairs, index = self._dirs[key]
        return (pairs, index) if len(pairs) else None

    def _predict_rows(self, classifier: Classifier, rows: Sequence[int]) -> dict[int, np.ndarray]:
        hit = self._preds.get(id(classifier))
        if hit is None or hit[0] is not classifier:
            if len(self._preds) >= self.max_cached:
                self._preds.pop(next(iter(self._preds)))
            hit = (classifier, {})
            self._preds[id(classifier)] = hit
        cache = hit[1]
        missing = sorted({int(r) for r in rows} - cache.keys())
        if missing:
            proba = np.asarray(classifier.predict_proba([self.space.pool.texts[r] for r in missing]), float)
            cache.update(zip(missing, proba, strict=True))
        return cache

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        import time

        started = time.perf_counter()
        self.space.schema.validate(intervention)
        source = source_value(text, intervention, base_labels, self.taggers, self.name)
        base = np.asarray(classifier.predict_proba([text]), float)[0]
        cost = Cost(classifier_calls=1, classifier_texts=1)
        found = (
            self._direction(intervention.concept, source, intervention.target)
            if source != intervention.target
            else None
        )
        if found is None:
            return Explanation(
                self.name,
                list(classifier.labels),
                base,
                np.zeros_like(base),
                np.zeros_like(base),
                intervention=intervention,
                cost=cost,
                details={
                    "used": 0,
                    "note": f"no pool pairs for {intervention.concept} "
                    f"{source}->{intervention.target}; effect reported as zero",
                },
            )
        pairs, index = found
        vec = self.space.embed([text], intervention.concept)[0]
        scores, ids = index.search(vec.reshape(1, -1).astype(np.float32), min(top_k, len(pairs)))
        chosen = pairs[ids[0][ids[0] >= 0]]
        sims = scores[0][: len(chosen)].astype(float)
        preds = self._predict_rows(classifier, chosen.flatten().tolist())
        w = np.ones(len(chosen)) if self.weighting == "mean" else np.clip(sims, 1e-6, None)
        w = w / w.sum()
        if self.scale == "logit":
            logs = np.stack([_log(preds[int(cf)]) - _log(preds[int(b)]) for b, cf in chosen])
            moved = _softmax(_log(base) + (w[:, None] * logs).sum(axis=0))
            deltas = np.stack([_softmax(_log(base) + d) - base for d in logs])
            icace = moved - base
        else:
            deltas = np.stack([preds[int(cf)] - preds[int(b)] for b, cf in chosen])
            icace = (w[:, None] * deltas).sum(axis=0)
        spread = np.sqrt((w[:, None] * (deltas - icace) ** 2).sum(axis=0))
        cfs = [
            Counterfactual(
                text=self.space.pool.texts[int(cf)],
                similarity=float(s),
                source_id=f"pair:{self._pool_id(int(b))}->{self._pool_id(int(cf))}",
                prediction=[float(x) for x in preds[int(cf)]],
            )
            for (b, cf), s in zip(chosen, sims, strict=True)
        ]
        cost.wall_time_s = time.perf_counter() - started
        return Explanation(
            self.name,
            list(classifier.labels),
            base,
            icace,
            spread,
            counterfactuals=cfs,
            intervention=intervention,
            cost=cost,
            details={
                "used": len(chosen),
                "source": source,
                "pairs_in_direction": len(pairs),
                "space": self.space.meta.get("name"),
                "scale": self.scale,
            },
        )


class StackedExplainer(Lifecycle):
    """A weighted sum of component explainers' ICaCE estimates (weights from cross-fitting on dev)."""

    name = "stacked"

    def __init__(
        self,
        components: Mapping[str, Explainer],
        weights: Mapping[str, float],
        weights_info: Mapping[str, Any] | None = None,
        weights_by_k: Mapping[int, Mapping[str, float]] | None = None,
    ) -> None:
        named = set(weights).union(*(set(w) for w in (weights_by_k or {}).values()))
        missing = {n for n in named if n not in components}
        if missing:
            raise ValueError(f"stacking weights name components that are not given: {sorted(missing)}")
        self.components = dict(components)
        self.weights = {k: float(v) for k, v in weights.items()}
        self.weights_by_k = {
            int(k): {n: float(x) for n, x in w.items()} for k, w in (weights_by_k or {}).items()
        }
        self.weights_info = dict(weights_info or {})

    def _load(self) -> None:
        for component in self.components.values():
            component.load()

    def _close(self) -> None:
        for component in self.components.values():
            component.close()

    def describe(self) -> dict[str, Any]:
        """The weights this stack uses (per K where fit per K) and where they came from."""
        return {
            "weights": self.weights,
            "weights_by_k": {str(k): w for k, w in self.weights_by_k.items()},
            "weights_info": self.weights_info,
        }

    def weights_for(self, top_k: int) -> dict[str, float]:
        """Weights fit at the largest fitted K not above top_k (the smallest fitted K if none is)."""
        if not self.weights_by_k:
            return self.weights
        ks = sorted(self.weights_by_k)
        below = [k for k in ks if k <= top_k]
        return self.weights_by_k[below[-1] if below else ks[0]]

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        cost = Cost()
        parts: dict[str, Explanation] = {}
        weights = self.weights_for(top_k)
        for name, w in weights.items():
            if w == 0.0:
                continue
            parts[name] = self.components[name].explain(
                text, intervention, classifier, top_k, base_labels=base_labels
            )
            cost.add(parts[name].cost)
        if not parts:  # every weight is zero: the stack says "no effect"
            base = np.asarray(classifier.predict_proba([text]), float)[0]
            icace = np.zeros_like(base)
        else:
            base = next(iter(parts.values())).base_prediction
            icace = combine({n: e.icace for n, e in parts.items()}, {n: weights[n] for n in parts})
        # The K counterfactuals shown: the heaviest components' first, each text once.
        ranked = sorted(parts, key=lambda n: -weights[n])
        cfs = list({c.text: c for n in ranked for c in parts[n].counterfactuals}.values())[:top_k]
        return Explanation(
            self.name,
            list(classifier.labels),
            base,
            np.asarray(icace, float),
            np.zeros_like(base),
            counterfactuals=cfs,
            intervention=intervention,
            cost=cost,
            details={
                "weights": weights,
                "weights_info": self.weights_info,
                "components": {n: [round(float(x), 5) for x in e.icace] for n, e in parts.items()},
            },
        )
