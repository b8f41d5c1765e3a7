"""The `auto` explainer: the calibrated best estimator for the classifier and domain.

Built from `Resources` plus a `Calibration` (`resources.extra["calibration"]`: the object,
or a path to its folder). For an intervention it picks the estimator the calibration
chose for that (concept, direction) (a single method, a per-cell stack or a learned
combiner), runs the components that estimator needs, and answers with the projected
ICaCE plus, in `details`: the estimator and its weights, the expected error for that
cell, and a split-conformal per-label interval with its nominal coverage.

Before the first explanation with a classifier it checks the calibration's fingerprint
(the classifier's predictions on the stored probe texts: one call); a classifier that
answers differently (a changed model) is explained with the uncalibrated default instead,
and the details say why. Without a calibration `auto` uses `UNCALIBRATED_DEFAULT`
(chosen by measurement: benchmarks/results/faithfulness_calibrated.md) and says so.

Components share one prediction cache per classifier, filled with one call holding the
text and every counterfactual the matching components found, so a remote classifier is
called about once per explanation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from explainers.classifiers.base import Classifier
from explainers.classifiers.cache import CachingClassifier
from explainers.concepts import Intervention
from explainers.estimators.calibration import Calibration, CountingClassifier, parse_component
from explainers.estimators.crossfit import combine
from explainers.estimators.stack import project_icace
from explainers.labels import source_value
from explainers.pool_kernel import predict_in_chunks
from explainers.registry import MissingResource, Resources, build_explainer, options_for, register
from explainers.types import Cost, Counterfactual, CounterfactualExplainer, Explainer, Explanation, Lifecycle

# The estimator fit to nothing that is best on all CEBaB dev pairs for both reference classifiers
# (benchmarks/results/faithfulness_calibrated*.md, `uncal:*` rows): splice_median at K = 20,
# L2 / Cos 0.2108 / 0.4361 (tfidf-lr) and 0.3289 / 0.3438 (minilm-ft), against 0.2239 / 0.4666 and
# 0.3844 / 0.4088 for the previous default (match + pair_transfer + s_learner at K = 10) and
# 0.3087 / 0.5678 and 0.4083 / 0.4336 for match alone.
UNCALIBRATED_DEFAULT: dict[str, float] = {"splice_median@20": 1.0}


class AutoExplainer(Lifecycle):
    name = "auto"

    def __init__(
        self,
        resources: Resources,
        calibration: Calibration | None,
        options: Mapping[str, Any] | None = None,
        max_cached_classifiers: int = 4,
    ) -> None:
        self.resources = resources
        self.calibration = calibration
        self.options = dict(options or {})
        self.max_cached = max_cached_classifiers
        self._explainers: dict[str, Explainer] = {}
        self._classifiers: dict[
            int, tuple[Classifier, CountingClassifier, CachingClassifier, str | None]
        ] = {}

    def _load(self) -> None:
        for component in list(self._explainers.values()):
            component.load()

    def _close(self) -> None:
        # The components it built are its own; the wrapped classifiers hold their clients.
        for component in list(self._explainers.values()):
            component.close()
        self._explainers.clear()
        self._classifiers.clear()

    def _explainer(self, method: str) -> Explainer:
        if method not in self._explainers:
            # Components run as they were calibrated (e.g. splice's K cap), unless told otherwise.
            fitted = (
                dict(self.calibration.meta.get("protocol", {}).get("options", {})) if self.calibration else {}
            )
            if self.calibration and "splice_max_k" in fitted:
                # Calibrated before splice_unit was recorded: splice then replaced whole sentences;
                # before splice_edit_pieces was, it transplanted one-piece edits only.
                fitted.setdefault("splice_unit", "sentence")
                fitted.setdefault("splice_edit_pieces", 1)
            self._explainers[method] = build_explainer(
                method, self.resources, **options_for(method, {**fitted, **self.options})
            )
        return self._explainers[method]

    def _wrapped(self, classifier: Classifier) -> tuple[CountingClassifier, CachingClassifier, str | None]:
        """A stable cache per classifier (pool scores are keyed by it) and its calibration check."""
        hit = self._classifiers.get(id(classifier))
        if hit is None or hit[0] is not classifier:
            counting = CountingClassifier(classifier)
            cached = CachingClassifier(counting, key=f"auto-{id(classifier)}")
            stale = None
            if self.calibration is not None:
                ok, got = self.calibration.check_classifier(cached)
                if not ok:
                    stale = (
                        f"calibration {self.calibration.meta.get('classifier', {}).get('name')!r} was fit for "
                        f"fingerprint {self.calibration.meta.get('classifier', {}).get('fingerprint')}, this "
                        f"classifier gives {got}: the model changed; recalibrate"
                    )
            if len(self._classifiers) >= self.max_cached:
                self._classifiers.pop(next(iter(self._classifiers)))
            hit = (classifier, counting, cached, stale)
            self._classifiers[id(classifier)] = hit
        return hit[1], hit[2], hit[3]

    def warm(self, classifier: Classifier) -> None:
        """Score every pool text once (in batches), so no explanation pays for first-time pool scoring."""
        _, cached, _ = self._wrapped(classifier)
        if self.resources.pool is not None:
            predict_in_chunks(cached, list(self.resources.pool.texts))

    def describe(self) -> dict[str, Any]:
        if self.calibration is None:
            return {"calibrated": False, "default": UNCALIBRATED_DEFAULT}
        m = self.calibration.meta
        return {
            "calibrated": True,
            "classifier": m.get("classifier", {}).get("name"),
            "fingerprint": m.get("classifier", {}).get("fingerprint"),
            "default": self.calibration.default,
            "choice": self.calibration.choice,
            "created_at": m.get("created_at"),
        }

    def explain(
        self,
        text: str,
        intervention: Intervention,
        classifier: Classifier,
        top_k: int = 5,
        *,
        base_labels: Mapping[str, str] | None = None,
    ) -> Explanation:
        started = time.perf_counter()
        counting, cached, stale = self._wrapped(classifier)
        calls0, texts0 = counting.calls, counting.texts
        self.resources.schema.validate(intervention)
        source = source_value(text, intervention, base_labels, self.resources.taggers, self.name)
        concept, target = intervention.concept, intervention.target
        direction = f"{source}->{target}"
        cal = self.calibration if stale is None else None
        if cal is not None:
            estimator = cal.estimator_for(concept, direction)
            needed = cal.required_components(estimator)
            if cal.situation is not None and cal.robust and cal.robust != estimator:
                # The fallback's components come in the same classifier call: which one answers
                # is known only once the text's own prediction is.
                needed = list(dict.fromkeys([*needed, *cal.required_components(cal.robust)]))
        else:
            estimator, needed = "uncalibrated", list(UNCALIBRATED_DEFAULT)
        found = self._prefetch(text, intervention, cached, needed, base_labels)
        parts: dict[str, Explanation] = {}
        for name in needed:
            method, k = parse_component(name)
            explainer = self._explainer(method)
            if method in found and isinstance(explainer, CounterfactualExplainer):
                cfs, found_details = found[method]
                parts[name] = explainer.explain_counterfactuals(
                    text, intervention, cached, cfs[:k], dict(found_details)
                )
            else:
                parts[name] = explainer.explain(text, intervention, cached, top_k=k, base_labels=base_labels)
        base = np.asarray(cached.predict_proba([text]), float)[0]
        ests = {n: np.asarray(e.icace, float)[None, :] for n, e in parts.items()}
        details: dict[str, Any] = {
            "source": source,
            "components": {n: [round(float(x), 5) for x in e.icace] for n, e in parts.items()},
        }
        if cal is not None:
            answer = cal.estimate_situated(ests, base[None, :], [concept], [source], [target])[0]
            estimator, icace, check = answer.estimator, answer.icace, answer.check
            expected, lower, upper = answer.expected, answer.lower, answer.upper
            details.update(
                calibrated=True,
                **cal.describe_estimator(estimator, concept, direction),
                expected_error=expected,
                interval={
                    "lower": [round(float(x), 5) for x in lower],
                    "upper": [round(float(x), 5) for x in upper],
                    "coverage": cal.intervals.coverage,
                    "kind": "split-conformal per label from held-out pool pairs, weighted towards the pairs "
                    "whose base prediction looks like this text's, clipped to the possible range",
                    "valid": check.valid if check is not None else None,
                    **(
                        {
                            "note": "zero width: in this concept and direction the held-out pairs' "
                            f"estimates were exact (residual 0) in at least {cal.intervals.coverage:.0%} "
                            "of them"
                        }
                        if np.allclose(lower, upper, atol=1e-12)
                        else {}
                    ),
                },
                situation=(
                    {**check.to_dict(), **({"fallback": estimator} if not check.valid else {})}
                    if check is not None
                    else None
                ),
                calibration={
                    "classifier": cal.meta.get("classifier", {}).get("name"),
                    "fingerprint": cal.meta.get("classifier", {}).get("fingerprint"),
                    "created_at": cal.meta.get("created_at"),
                    "pairs_origin": cal.meta.get("pairs_origin"),
                    "shift": cal.meta.get("shift"),
                },
            )
        else:
            icace = project_icace(combine(ests, UNCALIBRATED_DEFAULT), base[None, :])[0]
            details.update(
                calibrated=False,
                estimator="uncalibrated default",
                weights=UNCALIBRATED_DEFAULT,
                note=stale
                or "no calibration for this classifier and domain: the uncalibrated default "
                "(chosen by measurement on CEBaB dev) is used; no interval",
            )
        cfs = [c for e in parts.values() for c in e.counterfactuals][: max(top_k, 1)]
        spread = counterfactual_spread(parts, None if cal is not None else UNCALIBRATED_DEFAULT, len(base))
        # The most counterfactuals any component averaged (the answer shows at most top_k of them).
        details["used"] = max((len(e.counterfactuals) for e in parts.values()), default=0)
        cost = Cost(
            classifier_calls=counting.calls - calls0,
            classifier_texts=counting.texts - texts0,
            wall_time_s=time.perf_counter() - started,
        )
        return Explanation(
            self.name,
            list(classifier.labels),
            base,
            np.asarray(icace, float),
            spread,
            counterfactuals=cfs,
            intervention=intervention,
            cost=cost,
            details=details,
        )

    def _prefetch(
        self,
        text: str,
        intervention: Intervention,
        cached: CachingClassifier,
        needed: list[str],
        base_labels: Mapping[str, str] | None,
    ) -> dict[str, tuple[list[Counterfactual], dict[str, Any]]]:
        """One classifier call for the text and every counterfactual the components will use.

        Returns the counterfactuals found at the widest K of each method whose smaller K are
        its prefixes (`nested_top_k`), so those methods search once per explanation.
        """
        texts = [text]
        widest: dict[str, int] = {}
        for name in needed:
            m, k = parse_component(name)
            widest[m] = max(widest.get(m, 0), k)
        nested: dict[str, tuple[list[Counterfactual], dict[str, Any]]] = {}
        for m, k in widest.items():
            exp = self._explainer(m)
            if isinstance(exp, CounterfactualExplainer):
                cfs, details = exp.counterfactuals(text, intervention, k, base_labels=base_labels)
                texts += [c.text for c in cfs]
                if exp.nested_top_k:
                    nested[m] = (cfs, details)
        cached.predict_proba(list(dict.fromkeys(texts)))
        return nested


def counterfactual_spread(
    parts: Mapping[str, Explanation], weights: Mapping[str, float] | None, n_labels: int
) -> np.ndarray:
    """How much the components' counterfactuals disagree: their measured spreads, weighted.

    Only components that averaged two or more counterfactuals measured a spread (a baseline or a
    single text has none); with `weights` (the uncalibrated default's) those weigh, else they count
    equally. Zero only when no component measured one: the answer's `n_counterfactuals` then says so.
    """
    measured = {n: e for n, e in parts.items() if len(e.counterfactuals) >= 2}
    if not measured:
        return np.zeros(n_labels)
    w = {n: float((weights or {}).get(n, 1.0 if weights is None else 0.0)) for n in measured}
    total = sum(w.values())
    if total <= 0:
        w, total = dict.fromkeys(measured, 1.0), float(len(measured))
    return np.asarray(sum(w[n] * np.asarray(e.spread, float) for n, e in measured.items()), float) / total


def load_calibration(value: Any) -> Calibration | None:
    if value is None or isinstance(value, Calibration):
        return value
    if isinstance(value, (str, Path)):
        return Calibration.load(Path(value))
    raise MissingResource(
        f"resources.extra['calibration'] must be a Calibration or a folder, not {type(value)}"
    )


@register(
    "auto",
    "The calibrated best estimator for this classifier and domain (uncalibrated default without one)",
    composite=True,
)
def make_auto(resources: Resources, **options: Any) -> AutoExplainer:
    resources.need("pool", "auto")
    cal = load_calibration(resources.extra.get("calibration"))
    if cal is not None:
        resources.extra["calibration"] = cal
    auto = AutoExplainer(resources, cal, options)
    # Build every component now, so a missing resource (no space) is an error when the method is asked for.
    if cal is None:
        needed = set(UNCALIBRATED_DEFAULT)
    else:
        chosen = {cal.default, *cal.choice.values(), *([cal.robust] if cal.robust else [])}
        needed = {c for est in chosen for c in cal.required_components(est)}
    for method in sorted({parse_component(c)[0] for c in needed}):
        auto._explainer(method)
    return auto
