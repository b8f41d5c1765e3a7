"""A model comparison: two classifiers scored on the SAME counterfactuals, cell by cell.

The per-text results come from `ReportScorer.score` with two classifiers (one search, each
counterfactual scored by both). Per cell, each text's ICaCE under B minus its ICaCE under A is
a paired difference; the CaCE difference is their mean and its CI a bootstrap over texts (each
resample keeps a text's two ICaCEs together). A cell is flagged when its largest |difference|
over labels exceeds the threshold (per concept, or one for all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from explainers.estimate import cace
from explainers.reports.report import Cell, _seed, _vec, cell_arrays


def summarize_comparison(
    rows: Iterable[Mapping[str, Any]],
    *,
    labels: Sequence[str],
    cells: Sequence[Cell],
    names: tuple[str, str],
    threshold: float = 0.05,
    thresholds: Mapping[str, float] | None = None,
    skipped: Sequence[Mapping[str, Any]] = (),
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    top_texts: int = 3,
) -> dict[str, Any]:
    """Cells ranked by |CaCE(B) - CaCE(A)|, each with its paired bootstrap CI and whether it is flagged."""
    labels = list(labels)
    per, failed = cell_arrays(rows, cells)
    skipped = list(skipped)
    thresholds = dict(thresholds or {})
    out_cells: list[dict[str, Any]] = []
    for cell in cells:
        entries, items = per[cell.key]["entries"], per[cell.key]["items"]
        keep = [j for j, e in enumerate(entries) if e["n"] > 0]
        if not keep:
            if not any(s.get("key") == cell.key for s in skipped):
                why = (
                    f"no text of the sample has {cell.concept}={cell.source!r}"
                    if not entries
                    else f"no counterfactual found for any of the {len(entries)} texts"
                )
                skipped.append({**cell.as_dict(), "reason": why})
            continue
        a = np.array([entries[j]["icace"][0] for j in keep], float)
        b = np.array([entries[j]["icace"][1] for j in keep], float)
        s = _seed(seed, cell.key) % 2**32
        ca, cb = (
            cace(a, confidence=confidence, n_boot=n_boot, seed=s),
            cace(b, confidence=confidence, n_boot=n_boot, seed=s),
        )
        diff = cace(b - a, confidence=confidence, n_boot=n_boot, seed=s)
        at = int(np.argmax(np.abs(diff.cace)))
        limit = float(thresholds.get(cell.concept, threshold))
        shift = float(abs(diff.cace[at]))
        significant = bool(np.any((diff.ci_low > 0) | (diff.ci_high < 0)))
        moved = np.abs(b - a).sum(axis=1)
        tops = []
        for j in np.argsort(-moved)[:top_texts]:
            index, payload, res = items[keep[int(j)]]
            entry = entries[keep[int(j)]]
            tops.append(
                {
                    "index": index,
                    "id": payload.get("id"),
                    "text": payload.get("text"),
                    "icace": {
                        names[0]: _vec(labels, entry["icace"][0]),
                        names[1]: _vec(labels, entry["icace"][1]),
                    },
                    "counterfactuals": [
                        {
                            "text": c["text"],
                            "prediction": {names[k]: _vec(labels, c["prediction"][k]) for k in (0, 1)},
                        }
                        for c in entry.get("counterfactuals", [])
                    ],
                }
            )
        out_cells.append(
            {
                **cell.as_dict(),
                "n_texts": len(entries),
                "n_changed": len(keep),
                "cace": {names[0]: _vec(labels, ca.cace), names[1]: _vec(labels, cb.cace)},
                "diff": _vec(labels, diff.cace),
                "ci_low": _vec(labels, diff.ci_low),
                "ci_high": _vec(labels, diff.ci_high),
                "shift": round(shift, 6),
                "shift_label": labels[at],
                "threshold": limit,
                "flagged": shift > limit,
                "significant": significant,
                "top_texts": tops,
            }
        )
    out_cells.sort(key=lambda c: -c["shift"])
    for rank, c in enumerate(out_cells, start=1):
        c["rank"] = rank
    return {
        "kind": "comparison",
        "classifiers": list(names),
        "labels": labels,
        "confidence": confidence,
        "threshold": threshold,
        "thresholds": thresholds,
        "n_flagged": sum(c["flagged"] for c in out_cells),
        "n_failed": failed,
        "cells": out_cells,
        "skipped": skipped,
    }
