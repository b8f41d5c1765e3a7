"""Estimators fit to one (classifier, domain): held-out scoring, stacking, a learned combiner,
conformal intervals, and the `Calibration` artifact that `auto` explains with.

- `crossfit.py`: the primitives: NNLS weights (`fit_weights`, `combine`), folds by group
  (`group_folds`) and honest cross-fitted scoring (`cross_fit`).
- `heldout.py`: split a pool's origins into folds and score methods on each fold's pairs
  against the rest of the pool (no pair's own texts are in the pool it is scored against).
- `stack.py`: non-negative stacks per K and per (concept, direction), shrunk to the pooled
  weights; projection of an estimate onto the probability simplex.
- `combiner.py`: a learned combiner (gradient boosting or ridge) over the component
  estimates, the base prediction and the intervention, cross-fit by origin.
- `intervals.py`: split-conformal per-label intervals from held-out residuals.
- `calibration.py`: the saved `Calibration` (meta.json, fingerprint) that `auto` reads;
  `calibration_fit.py`: `calibrate()`, the fit that makes one.
- `auto.py`: the `auto` explainer (registered in `explainers.registry`).
"""
