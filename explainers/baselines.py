"""Baseline explainers: the yardsticks every method is shown beside.

On weak classifiers the trivial estimates are hard to beat, so the benchmark always
reports them. All implement the `Explainer` protocol and register in
`explainers.registry`:

- `zero`: no effect. Its Cosine error is exactly 1 and its L2 is the norm of the truth.
- `random`: K random pool texts, whatever their labels (a counterfactual that ignores the
  intervention); `random_proba`: CEBaB's own Random, the difference of two random
  probability vectors.
- `random_matching`: K random pool texts with the target value.
- `conexp`: E[f | c = target] - E[f | c = source] over the pool (CEBaB's CONEXP).
- `approx`: K random pool texts with the target value and the base's confounder labels.
- `approx_match`: among Approx's candidates, the K most similar by the pretrained encoder.
- `s_learner`: logistic regression from one-hot concept labels to the model's predicted
  class; ICaCE = model(labels with the concept set to target) - model(base labels).
- `pt_match`: pretrained-encoder (MiniLM) cosine top-K among pool texts with the target value.

Randomness is seeded per query from (resources.seed, text, intervention) (`pool_kernel.query_rng`),
so an estimate does not depend on the order queries arrive in, and K=1's pick is the first of K=5's.
When Approx finds fewer than K texts with all confounders equal, it relaxes them
progressively (texts matching more confounders first) and says so in `details`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge

from explainers.classifiers.base import Classifier
from explainers.concepts import Intervention
from explainers.data.pool import Pool
from explainers.labels import labels_of, source_value
from explainers.pool_kernel import PoolMatcher, PoolScores, one_hot, query_rng
from explainers.registry import MissingResource, Resources, register
from explainers.types import Cost, Counterfactual, Explanation, Lifecycle


def _base_prediction(classifier: Classifier, text: str, cost: Cost) -> np.ndarray:
    cost.classifier_calls += 1
    cost.classifier_texts += 1
    return np.asarray(classifier.predict_proba([text]), float)[0]


def _explanation(
    method: str,
    classifier: Classifier,
    base: np.ndarray,
    icace: np.ndarray,
    intervention: Intervention,
    details: dict[str, Any],
    cost: Cost,
    started: float,
) -> Explanation:
    cost.wall_time_s += time.perf_counter() - started
    return Explanation(
        method=method,
        labels=list(classifier.labels),
        base_prediction=base,
        icace=np.asarray(icace, float),
        spread=np.zeros_like(base),
        intervention=intervention,
        details=details,
        cost=cost,
    )


class ZeroExplainer(Lifecycle):
    """No effect: the estimate every method must beat."""

    name = "zero"

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        started, cost = time.perf_counter(), Cost()
        base = _base_prediction(classifier, text, cost)
        return _explanation(
            self.name, classifier, base, np.zeros_like(base), intervention, {"used": 0}, cost, started
        )


class RandomProbaExplainer(Lifecycle):
    """CEBaB's Random: the difference of two random probability vectors (uniform, L1-normalised)."""

    name = "random_proba"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        started, cost = time.perf_counter(), Cost()
        base = _base_prediction(classifier, text, cost)
        rng = query_rng(self.seed, text, intervention)
        p = rng.uniform(size=(2, len(base)))
        p /= p.sum(axis=1, keepdims=True)
        return _explanation(
            self.name, classifier, base, p[1] - p[0], intervention, {"used": 0}, cost, started
        )


class ConexpExplainer(Lifecycle):
    """CONEXP: the difference of the model's mean output over pool texts with each value."""

    name = "conexp"

    def __init__(self, pool: Pool, taggers: Any | None = None) -> None:
        self.pool = pool
        self.taggers = taggers
        self.scores = PoolScores(pool)
        self._means: dict[int, dict[tuple[str, str], np.ndarray]] = {}

    def _close(self) -> None:
        # The pool scores hold the classifiers they scored (and so their HTTP clients).
        self.scores.clear()
        self._means.clear()

    def _conditional_means(self, classifier: Classifier, cost: Cost) -> dict[tuple[str, str], np.ndarray]:
        preds = self.scores.get(classifier, cost)
        means = self._means.get(id(classifier))
        if means is None:
            means = {}
            for concept in self.pool.schema.names:
                for value in self.pool.schema[concept].values:
                    idx = self.pool.indices_with(concept, value)
                    if idx:
                        means[(concept, value)] = preds[idx].mean(axis=0)
            self._means = {id(classifier): means}
        return means

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        started, cost = time.perf_counter(), Cost()
        source = source_value(text, intervention, base_labels, self.taggers, self.name)
        base = _base_prediction(classifier, text, cost)
        means = self._conditional_means(classifier, cost)
        c = intervention.concept
        if (c, source) not in means or (c, intervention.target) not in means:
            return _explanation(
                self.name,
                classifier,
                base,
                np.zeros_like(base),
                intervention,
                {"used": 0, "note": "no pool text with the source or target value; effect zero"},
                cost,
                started,
            )
        icace = means[(c, intervention.target)] - means[(c, source)]
        return _explanation(
            self.name, classifier, base, icace, intervention, {"used": 0, "source": source}, cost, started
        )


class SLearnerExplainer(Lifecycle):
    """S-Learner: a model of the classifier's output from concept labels alone, intervened on.

    `target="argmax"` (CEBaB's choice) fits a logistic regression to the predicted class;
    `target="proba"` fits a ridge regression to the probability vector.
    """

    name = "s_learner"

    def __init__(
        self, pool: Pool, taggers: Any | None = None, target: str = "argmax", C: float = 1.0
    ) -> None:
        if target not in ("argmax", "proba"):
            raise ValueError("s_learner target must be 'argmax' or 'proba'")
        self.pool = pool
        self.taggers = taggers
        self.target = target
        self.C = C
        self.scores = PoolScores(pool)
        self.x_pool = one_hot(pool.labels, pool.schema)
        self._fitted: tuple[int, Any, np.ndarray | None] | None = None

    def _close(self) -> None:
        self.scores.clear()
        self._fitted = None

    def _model(self, classifier: Classifier, cost: Cost | None = None) -> tuple[Any, np.ndarray | None]:
        if self._fitted is not None and self._fitted[0] == id(classifier):
            return self._fitted[1], self._fitted[2]
        preds = self.scores.get(classifier, cost)
        if self.target == "proba":
            model: Any = Ridge(alpha=1.0 / self.C).fit(self.x_pool, preds)
            classes = None
        else:
            y = preds.argmax(axis=1)
            classes = np.unique(y)
            model = (
                LogisticRegression(C=self.C, max_iter=2000).fit(self.x_pool, y) if len(classes) > 1 else None
            )
        self._fitted = (id(classifier), model, classes)
        return model, classes

    def _predict(self, model: Any, classes: np.ndarray | None, x: np.ndarray, n_labels: int) -> np.ndarray:
        if self.target == "proba":
            return model.predict(x)
        out = np.zeros((len(x), n_labels))
        if model is None:  # the classifier predicts one class on the whole pool
            assert classes is not None
            out[:, int(classes[0])] = 1.0
        else:
            out[:, model.classes_] = model.predict_proba(x)
        return out

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        labels = labels_of(text, base_labels, self.taggers, self.name)
        if intervention.source is not None:
            labels[intervention.concept] = intervention.source
        after = dict(labels, **{intervention.concept: intervention.target})
        started, cost = time.perf_counter(), Cost()
        base = _base_prediction(classifier, text, cost)
        model, classes = self._model(classifier, cost)
        x = one_hot([labels, after], self.pool.schema)
        y = self._predict(model, classes, x, len(base))
        return _explanation(
            self.name,
            classifier,
            base,
            y[1] - y[0],
            intervention,
            {"used": 0, "labels": labels, "target": self.target},
            cost,
            started,
        )


class RandomExplainer(PoolMatcher):
    """Random: K pool texts drawn at random, whatever their labels."""

    name = "random"

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        rng = query_rng(self.seed, text, intervention)
        own = self._text_index.get(text)
        order = rng.permutation(len(self.pool))
        if own is not None:
            order = order[order != own]
        return [self.counterfactual(int(i)) for i in order[:top_k]], {"candidates": len(order)}


class RandomMatchingExplainer(PoolMatcher):
    """RandomMatching: K random pool texts with the target value."""

    name = "random_matching"

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        cand = self.target_candidates(text, intervention)
        rng = query_rng(self.seed, text, intervention)
        chosen = cand[rng.permutation(len(cand))[:top_k]]
        return [self.counterfactual(int(i)) for i in chosen], {"candidates": len(cand)}


class PretrainedMatchExplainer(PoolMatcher):
    """PT-Match: the K pool texts with the target value closest to the query by pretrained-encoder cosine."""

    name = "pt_match"
    needs_similarities = True

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        cand = self.target_candidates(text, intervention)
        if len(cand) == 0:
            return [], {"candidates": 0}
        sims = self.similarities(text, cand)
        top = np.argsort(-sims, kind="stable")[:top_k]
        return [self.counterfactual(int(cand[j]), float(sims[j])) for j in top], {"candidates": len(cand)}


class ApproxExplainer(PoolMatcher):
    """Approx: pool texts with the target value and the base's confounder labels, drawn at random.

    Candidates are tiered by how many confounders they share with the base. `relax="fill"`
    fills K from lower tiers when the full-match tier has fewer than K texts;
    `relax="nonempty"` uses the best non-empty tier only (fewer than K if need be).
    """

    nested_top_k = True  # one seeded order of the candidates, cut at K
    name = "approx"
    needs_labels = True

    def __init__(self, pool: Pool, *, relax: str = "fill", **kwargs: Any) -> None:
        if relax not in ("fill", "nonempty"):
            raise ValueError("relax must be 'fill' or 'nonempty'")
        super().__init__(pool, **kwargs)
        self.relax = relax

    def tiers(
        self, text: str, intervention: Intervention, base_labels: Mapping[str, str] | None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(candidates, confounders matched per candidate, number of confounders)."""
        labels = labels_of(text, base_labels, self.taggers, self.name)
        cand = self.target_candidates(text, intervention)
        conf = np.array([j for j, c in enumerate(self.concepts) if c != intervention.concept], dtype=np.int64)
        want = np.array(
            [self._codes[self.concepts[j]].get(labels.get(self.concepts[j], ""), -2) for j in conf]
        )
        matched = (
            (self.label_codes[np.ix_(cand, conf)] == want).sum(axis=1) if len(cand) else np.zeros(0, int)
        )
        return cand, matched, len(conf)

    def secondary_key(
        self, text: str, intervention: Intervention, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Order within a tier (lower first) and similarities if any: Approx draws at random."""
        return query_rng(self.seed, text, intervention).permutation(len(cand)), None

    def counterfactuals(
        self,
        text: str,
        intervention: Intervention,
        top_k: int,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Counterfactual], dict[str, Any]]:
        cand, matched, n_conf = self.tiers(text, intervention, base_labels)
        tier_sizes = {str(t): int((matched == t).sum()) for t in range(n_conf, -1, -1)}
        if len(cand) == 0:
            return [], {"candidates": 0, "tiers": tier_sizes, "relaxed": False}
        key, sims = self.secondary_key(text, intervention, cand)
        order = np.lexsort((key, -matched))  # most confounders matched first, then the tier order
        if self.relax == "nonempty":
            order = order[matched[order] == matched[order[0]]]
        order = order[:top_k]
        chosen = [
            self.counterfactual(
                int(cand[j]), None if sims is None else float(sims[j]), confounders_matched=int(matched[j])
            )
            for j in order
        ]
        relaxed = bool(len(order) and matched[order].min() < n_conf)
        return chosen, {"candidates": len(cand), "tiers": tier_sizes, "relaxed": relaxed}


class ApproxMatchExplainer(ApproxExplainer):
    """ApproxMatch: among Approx's candidates, the K most similar by pretrained-encoder cosine."""

    name = "approx_match"
    needs_similarities = True

    def __init__(self, pool: Pool, **kwargs: Any) -> None:
        if kwargs.get("encoder") is None:
            raise MissingResource("method 'approx_match' needs an encoder")
        super().__init__(pool, **kwargs)

    def secondary_key(
        self, text: str, intervention: Intervention, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        sims = self.similarities(text, cand)
        return -sims, sims


MATCHER_OPTIONS = ("aggregation", "similarity_threshold")


def _matcher_kwargs(
    resources: Resources, options: Mapping[str, Any], encoder: bool = False
) -> dict[str, Any]:
    kw: dict[str, Any] = {k: options[k] for k in MATCHER_OPTIONS if k in options}
    kw.update(seed=resources.seed, taggers=resources.taggers)
    if encoder:
        kw["encoder"] = resources.encoder
    return kw


# Each factory gets only the options it declares: the registry refuses any other.


@register("zero", "No effect (ICaCE = 0): the estimate every method must beat")
def _zero(resources: Resources, **_: Any) -> ZeroExplainer:
    return ZeroExplainer()


@register("random", "K random pool texts, any labels", options=MATCHER_OPTIONS)
def _random(resources: Resources, **options: Any) -> RandomExplainer:
    return RandomExplainer(resources.need("pool", "random"), **_matcher_kwargs(resources, options))


@register("random_proba", "CEBaB's Random: difference of two random probability vectors")
def _random_proba(resources: Resources, **_: Any) -> RandomProbaExplainer:
    return RandomProbaExplainer(seed=resources.seed)


@register("random_matching", "K random pool texts with the target value", options=MATCHER_OPTIONS)
def _random_matching(resources: Resources, **options: Any) -> RandomMatchingExplainer:
    return RandomMatchingExplainer(
        resources.need("pool", "random_matching"), **_matcher_kwargs(resources, options)
    )


@register("conexp", "E[f | c=target] - E[f | c=source] over the pool")
def _conexp(resources: Resources, **_: Any) -> ConexpExplainer:
    return ConexpExplainer(resources.need("pool", "conexp"), taggers=resources.taggers)


@register(
    "approx",
    "K random pool texts with the target value and the same confounder labels",
    options=(*MATCHER_OPTIONS, "relax"),
)
def _approx(resources: Resources, **options: Any) -> ApproxExplainer:
    kw = _matcher_kwargs(resources, options)
    return ApproxExplainer(resources.need("pool", "approx"), relax=options.get("relax", "fill"), **kw)


@register(
    "approx_match",
    "Approx's candidates, top-K by pretrained-encoder cosine",
    options=(*MATCHER_OPTIONS, "relax"),
)
def _approx_match(resources: Resources, **options: Any) -> ApproxMatchExplainer:
    resources.need("encoder", "approx_match")
    kw = _matcher_kwargs(resources, options, encoder=True)
    return ApproxMatchExplainer(
        resources.need("pool", "approx_match"), relax=options.get("relax", "fill"), **kw
    )


@register(
    "s_learner",
    "Logistic regression from concept labels to the model's prediction, intervened on",
    options=("s_learner_target",),
)
def _s_learner(resources: Resources, **options: Any) -> SLearnerExplainer:
    return SLearnerExplainer(
        resources.need("pool", "s_learner"),
        taggers=resources.taggers,
        target=options.get("s_learner_target", "argmax"),
    )


@register(
    "pt_match",
    "Pretrained MiniLM cosine top-K among pool texts with the target value",
    options=MATCHER_OPTIONS,
)
def _pt_match(resources: Resources, **options: Any) -> PretrainedMatchExplainer:
    resources.need("encoder", "pt_match")
    return PretrainedMatchExplainer(
        resources.need("pool", "pt_match"), **_matcher_kwargs(resources, options, encoder=True)
    )
