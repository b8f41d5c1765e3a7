"""CEBaB (Abraham et al., 2022; CC BY 4.0) as a domain: the service's embedded default.

Built by `build_domain` like any uploaded corpus, from `train_inclusive` (whose human edits
give the counterfactual pairs); only two things are CEBaB's own: the taggers are trained
on the raw per-concept majority labels and scored on `dev`, and the space carries the
stacking weights fit for the reference classifiers (explainers/matching/cebab_stacking.json).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from explainers.artifacts import META
from explainers.domains.build import BUILD_STAGES, READ_STAGE, build_domain, build_workers, load_stage
from explainers.domains.domain import Domain, majority_rate
from explainers.matching.cebab import SHIPPED_STACKING
from explainers.progress import Stages

DOMAIN_ID = "cebab"
POOL_SPLIT = "train_inclusive"
# What the reference classifiers' labels mean here: a review's overall rating in stars.
TASK = "the review's overall rating: 1 to 5 stars"
LABEL_NAMES = {str(n): f"{n} star{'s' if n > 1 else ''}" for n in range(1, 6)}


def _taggers_builder(data_dir: str | os.PathLike[str] | None):
    def build(out: Path) -> dict[str, dict[str, Any]]:
        from explainers.concepts import CEBAB_SCHEMA
        from explainers.taggers import cebab_corpus, train_cebab_taggers

        meta = train_cebab_taggers(
            out, Path(data_dir) if data_dir else None, split=POOL_SPLIT, workers=build_workers()
        )
        _, dev_labels = cebab_corpus("dev", Path(data_dir) if data_dir else None)
        report = {}
        for c in CEBAB_SCHEMA.concepts:
            acc = meta["dev_accuracy"][c.name]
            majority = majority_rate(dev_labels, c.name, c.values)
            report[c.name] = {
                "accuracy": acc["accuracy"],
                "majority": round(majority, 4),
                "n_eval": acc["n"],
                "usable": acc["accuracy"] > majority,
                "evaluated_on": "CEBaB dev",
            }
        return report

    return build


def ensure_cebab_domain(
    root: Path,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    encoder: Any,
    log: Any = None,
    stages: Stages | None = None,
) -> Domain:
    """Load root/cebab, building it from the CEBaB split files the first time (minutes on 2 cores).

    `stages` receives the progress: one `load` stage, or the build's stages (see `build_domain`).
    """
    from explainers.data.pools import cebab_pool

    path = Path(root) / DOMAIN_ID
    if (path / META).exists():
        domain = load_stage(path, encoder, stages)
        # Builds from before the label description had none.
        domain.meta.setdefault("task", TASK)
        domain.meta.setdefault("label_names", LABEL_NAMES)
        return domain
    stages = stages or Stages(f"domain {DOMAIN_ID}", log=log)
    stages.expect([READ_STAGE, *BUILD_STAGES])  # the whole plan up front: the percent never goes back
    with stages.stage("read", "CEBaB split files"):
        pool = cebab_pool(POOL_SPLIT, data_dir)
        extra = tagger_texts(data_dir)
        import explainers.matching.trainers  # noqa: F401  (torch's import, counted in a stage)
    shipped = json.loads(SHIPPED_STACKING.read_text()) if SHIPPED_STACKING.exists() else {}
    stacking = {k: {**v, "shipped_with_library": True} for k, v in shipped.get("stacking", {}).items()}
    return build_domain(
        Path(root),
        DOMAIN_ID,
        pool,
        encoder=encoder,
        source=f"CEBaB {POOL_SPLIT} (CC BY 4.0)",
        taggers_builder=_taggers_builder(data_dir),
        space_meta={"train_split": POOL_SPLIT, "stacking": stacking},
        log=log,
        stages=stages,
        # The taggers embed their training split and score on dev: embedded up front, on every core.
        embed_also=extra,
        resumable=True,
        task=TASK,
        label_names=LABEL_NAMES,
    )


def tagger_texts(data_dir: str | os.PathLike[str] | None) -> list[str]:
    from explainers.taggers import cebab_corpus

    folder = Path(data_dir) if data_dir else None
    return cebab_corpus(POOL_SPLIT, folder)[0] + cebab_corpus("dev", folder)[0]
