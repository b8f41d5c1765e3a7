"""The saved `Calibration` of the estimators for one (classifier, domain), and the classifier check.

What `auto` explains with (the fit is `calibration_fit.py`): per (concept, direction) the chosen
candidate (a single method, a non-negative stack, a learned combiner), its projection onto the
probability simplex (stack.py), split-conformal intervals and the expected error.

A `Calibration` is a folder: meta.json (kind, format version, classifier name and
fingerprint = hash of its predictions on a fixed probe set of pool texts, pool hash,
library versions, cost), calibration.json (stacks, choices, intervals, expected errors),
report.json (the tables), probe.json, combiner_<kind>.joblib, situation.npz (the calibration
pairs' behaviour and auto's errors there: explainers/estimators/shift.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explainers.artifacts import FORMAT_VERSIONS, read_meta, write_meta
from explainers.classifiers.base import Classifier
from explainers.data.pool import Pool
from explainers.estimators.combiner import Combiner
from explainers.estimators.intervals import Intervals
from explainers.estimators.shift import LocalCheck, Situation
from explainers.estimators.stack import CellStack, cell_key, project_icace

KIND = "calibration"
FORMAT_VERSION = FORMAT_VERSIONS[KIND]
PROBE_SIZE = 32
# A calibration's stages and their share of its time (the weights shape the percent; the ETA is measured).
CALIBRATION_STAGES = (("classify", 1.0), ("score", 6.0), ("fit", 1.0))


def component(method: str, k: int) -> str:
    return f"{method}@{k}"


def parse_component(name: str) -> tuple[str, int]:
    m, _, k = name.rpartition("@")
    return m, int(k)


# -- the classifier's fingerprint ------------------------------------------------------------
def probe_texts(pool: Pool, size: int = PROBE_SIZE) -> list[str]:
    """A fixed probe set: the pool texts with the smallest SHA-1, so it depends on the pool alone."""
    return sorted(set(pool.texts), key=lambda t: hashlib.sha1(t.encode("utf-8")).hexdigest())[:size]


def fingerprint(predictions: np.ndarray) -> str:
    """Hash of predictions rounded to 4 decimals (float noise of a re-deployed model does not flip it)."""
    rounded = np.round(np.asarray(predictions, float), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    return hashlib.sha256(json.dumps(rounded.tolist()).encode()).hexdigest()[:16]


class CountingClassifier:
    """Counts the calls and texts that reach the wrapped classifier (the calibration's cost)."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", None)
        self.calls = 0
        self.texts = 0

    @property
    def labels(self) -> list[str]:
        return list(self.inner.labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return self.inner.predict_proba(texts)


# -- the saved artifact -----------------------------------------------------------------------
@dataclass
class SituatedAnswer:
    """`auto`'s answer for one text: estimator, ICaCE, the claims valid for its situation."""

    estimator: str
    icace: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    expected: dict[str, Any] | None
    check: LocalCheck | None

    @property
    def valid(self) -> bool | None:
        return self.check.valid if self.check is not None else None


@dataclass
class Calibration:
    """What `auto` needs to explain with a calibrated estimator for one (classifier, domain)."""

    meta: dict[str, Any]
    labels: list[str]
    components: list[str]
    stacks: dict[int, CellStack]
    combiners: dict[str, Combiner]
    default: str
    choice: dict[str, str]
    intervals: Intervals
    expected: dict[str, dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    # The calibration pairs' behaviour and auto's errors there (per-answer validity), and the
    # estimator used where the calibration does not describe a text (None: older calibrations).
    situation: Situation | None = None
    robust: str | None = None
    robust_expected: dict[str, dict[str, Any]] = field(default_factory=dict)  # its error per cell

    # -- which estimator, which components --
    def estimator_for(self, concept: str, direction: str) -> str:
        return self.choice.get(cell_key(concept, direction), self.default)

    def required_components(self, estimator: str) -> list[str]:
        kind, _, arg = estimator.partition(":")
        if kind == "single":
            return [arg]
        if kind == "stack":
            st = self.stacks[int(arg)]
            return [c for c in st.components]
        if kind == "combiner":
            return list(self.combiners[arg].components)
        raise ValueError(f"unknown estimator {estimator!r}")

    def describe_estimator(self, estimator: str, concept: str, direction: str) -> dict[str, Any]:
        kind, _, arg = estimator.partition(":")
        if kind == "stack":
            return {"estimator": estimator, "weights": self.stacks[int(arg)].weights(concept, direction)}
        if kind == "combiner":
            return {"estimator": estimator, "components": self.combiners[arg].components}
        return {"estimator": estimator}

    def estimate(
        self,
        estimator: str,
        estimates: Mapping[str, np.ndarray],
        base: np.ndarray,
        concepts: Sequence[str],
        sources: Sequence[str],
        targets: Sequence[str],
    ) -> np.ndarray:
        """One estimator's (projected) ICaCE for rows of component estimates."""
        raw = _candidate_predict(
            estimator, self.stacks, self.combiners, estimates, base, concepts, sources, targets
        )
        return project_icace(raw, base)

    def estimate_auto(
        self,
        estimates: Mapping[str, np.ndarray],
        base: np.ndarray,
        concepts: Sequence[str],
        sources: Sequence[str],
        targets: Sequence[str],
    ) -> np.ndarray:
        """Every row with the estimator chosen for its (concept, direction)."""
        base = np.atleast_2d(np.asarray(base, float))
        out = np.zeros_like(base)
        dirs = [f"{s}->{t}" for s, t in zip(sources, targets, strict=True)]
        chosen = [self.estimator_for(c, d) for c, d in zip(concepts, dirs, strict=True)]
        for est in set(chosen):
            rows = np.array([c == est for c in chosen])
            idx = [int(i) for i in np.flatnonzero(rows)]
            out[rows] = self.estimate(
                est,
                {
                    n: np.atleast_2d(np.asarray(v))[rows]
                    for n, v in estimates.items()
                    if n in self.required_components(est)
                },
                base[rows],
                [concepts[i] for i in idx],
                [sources[i] for i in idx],
                [targets[i] for i in idx],
            )
        return out

    def estimate_situated(
        self,
        estimates: Mapping[str, np.ndarray],
        base: np.ndarray,
        concepts: Sequence[str],
        sources: Sequence[str],
        targets: Sequence[str],
    ) -> list[SituatedAnswer]:
        """What `auto` answers for each row: its estimator (the robust fallback where the calibration
        does not describe the row's situation), the ICaCE, and the situation's expected error and interval."""
        base = np.atleast_2d(np.asarray(base, float))
        out = []
        for i, (c, s, t) in enumerate(zip(concepts, sources, targets, strict=True)):
            direction = f"{s}->{t}"
            chosen = estimator = self.estimator_for(c, direction)
            check = self.check(base[i])
            if check is not None and not check.valid and self.robust:
                estimator = self.robust
            needed = self.required_components(estimator)
            row = {n: np.atleast_2d(np.asarray(estimates[n], float))[i : i + 1] for n in needed}
            icace = self.estimate(estimator, row, base[i : i + 1], [c], [s], [t])[0]
            expected, lower, upper = self.local_claims(
                check,
                icace,
                base[i],
                c,
                direction,
                robust=estimator != chosen,
            )
            out.append(SituatedAnswer(estimator, icace, lower, upper, expected, check))
        return out

    def expected_error(self, concept: str, direction: str) -> dict[str, float] | None:
        return self.expected.get(cell_key(concept, direction))

    def check(self, base_prediction: np.ndarray) -> LocalCheck | None:
        """What this calibration can claim for a text with this base prediction (None: not recorded)."""
        if self.situation is None:
            return None
        return self.situation.check(np.atleast_2d(np.asarray(base_prediction, float)))

    def local_claims(
        self,
        check: LocalCheck | None,
        icace: np.ndarray,
        base: np.ndarray,
        concept: str,
        direction: str,
        *,
        robust: bool = False,
    ) -> tuple[dict[str, Any] | None, np.ndarray, np.ndarray]:
        """The expected error and the interval for this text's situation.

        The cell's numbers scaled by how auto's error and residual quantiles near this text's base
        prediction compare with their averages over every calibration pair; the interval is clipped
        to what an ICaCE can be (base + ICaCE stays a probability vector), which never drops a truth.
        """
        cell: dict[str, Any] | None = (
            self.robust_expected.get(cell_key(concept, direction))
            if robust
            else self.expected_error(concept, direction)
        )
        expected = dict(cell) if cell is not None else None
        h = self.intervals.halfwidth(concept, direction)
        if check is not None:
            h = h * np.where(np.isfinite(check.halfwidth_ratio), check.halfwidth_ratio, np.inf)
            if expected is not None and "l2" in expected:
                expected["cell_l2"] = expected["l2"]
                expected["l2"] = round(float(expected["l2"]) * check.error_ratio, 5)
        est, b = np.asarray(icace, float), np.asarray(base, float)
        lower = np.maximum(est - h, -b)
        upper = np.minimum(est + h, 1.0 - b)
        return expected, lower, upper

    # -- the classifier check --
    def check_classifier(self, classifier: Classifier) -> tuple[bool, str]:
        """Whether `classifier` still gives the probe predictions this calibration was fit for."""
        texts = self.probe.get("texts") or []
        if not texts:
            return False, "no probe set stored"
        got = fingerprint(np.asarray(classifier.predict_proba(texts), float))
        want = self.meta.get("classifier", {}).get("fingerprint")
        return got == want, got

    # -- persistence --
    def save(self, directory: str | Path) -> Path:
        import joblib

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        body = {
            "labels": self.labels,
            "components": self.components,
            "stacks": {str(k): s.to_dict() for k, s in self.stacks.items()},
            "combiners": {k: f"combiner_{k}.joblib" for k in self.combiners},
            "default": self.default,
            "choice": self.choice,
            "intervals": self.intervals.to_dict(),
            "expected": self.expected,
            "robust": self.robust,
            "robust_expected": self.robust_expected,
            "situation": self.situation.to_dict() if self.situation is not None else None,
        }
        (tmp / "calibration.json").write_text(json.dumps(body, indent=1))
        (tmp / "report.json").write_text(json.dumps(self.report, indent=1, default=str))
        (tmp / "probe.json").write_text(json.dumps(self.probe, indent=1))
        for k, comb in self.combiners.items():
            joblib.dump(comb, tmp / f"combiner_{k}.joblib")
        if self.situation is not None:
            arrays = self.situation.to_arrays()
            np.savez(
                tmp / "situation.npz",
                features=arrays["features"],
                l2=arrays["l2"],
                residuals=arrays["residuals"],
                bandwidth=arrays["bandwidth"],
            )
        fields = {k: v for k, v in self.meta.items() if k not in ("kind", "created_at", "library_versions")}
        self.meta = write_meta(tmp, KIND, **fields)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Calibration:
        import joblib

        directory = Path(directory)
        meta = read_meta(directory, KIND)  # checks the format version
        body = json.loads((directory / "calibration.json").read_text())
        combiners = {k: joblib.load(directory / f) for k, f in body.get("combiners", {}).items()}
        situation = None
        if body.get("situation") and (directory / "situation.npz").exists():
            with np.load(directory / "situation.npz") as arrays:
                situation = Situation.from_parts(dict(arrays), body["situation"])
        return cls(
            meta,
            list(body["labels"]),
            list(body["components"]),
            {int(k): CellStack.from_dict(v) for k, v in body["stacks"].items()},
            combiners,
            body["default"],
            dict(body["choice"]),
            Intervals.from_dict(body["intervals"]),
            body["expected"],
            json.loads((directory / "report.json").read_text()),
            json.loads((directory / "probe.json").read_text()),
            situation,
            body.get("robust"),
            body.get("robust_expected") or {},
        )


def _candidate_predict(
    estimator: str,
    stacks: Mapping[int, CellStack],
    combiners: Mapping[str, Combiner],
    estimates: Mapping[str, np.ndarray],
    base: np.ndarray,
    concepts: Sequence[str],
    sources: Sequence[str],
    targets: Sequence[str],
) -> np.ndarray:
    kind, _, arg = estimator.partition(":")
    if kind == "single":
        return np.atleast_2d(np.asarray(estimates[arg], float))
    dirs = [f"{s}->{t}" for s, t in zip(sources, targets, strict=True)]
    if kind == "stack":
        return stacks[int(arg)].predict(estimates, concepts, dirs)
    if kind == "combiner":
        return combiners[arg].predict(estimates, base, concepts, sources, targets)
    raise ValueError(f"unknown estimator {estimator!r}")


__all__ = [
    "Calibration",
    "CountingClassifier",
    "SituatedAnswer",
    "component",
    "fingerprint",
    "parse_component",
    "probe_texts",
]
