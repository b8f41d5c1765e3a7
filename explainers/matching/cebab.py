"""Concept spaces trained on CEBaB: `build_cebab_space` and `ensure_cebab_space`.

The pool is a CEBaB training split (default `train_inclusive`, whose human edits give the
T and C groups and the pairs pair-transfer needs). `train_exclusive` holds no two texts of
one origin, so it yields no groups and no pairs by itself: the paper's realistic setting
adds LLM-generated counterfactuals to it (`extra_pairs`), which must come from
`explainers.generation` at training time.

`ensure_cebab_space` is what the service's embedded default calls on start: it loads the
space if its directory exists and trains it (head trainer: embed ~12k texts, then seconds
of training per concept) otherwise.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from explainers.artifacts import META, child_path
from explainers.data.pool import Pool
from explainers.data.pools import cebab_pool
from explainers.embeddings import Encoder
from explainers.matching.space import ConceptSpace
from explainers.matching.trainers import HeadProjection, TrainConfig, train_full, train_head

TRAINERS = ("head", "full", "none")


def space_name(train_split: str, trainer: str) -> str:
    return f"cebab-{Path(str(train_split)).stem}-{trainer}"


def build_cebab_space(
    root: str | os.PathLike[str],
    train_split: str = "train_inclusive",
    trainer: str = "head",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    config: TrainConfig | None = None,
    encoder: Encoder | None = None,
    exclude_texts: Collection[str] = (),
    concepts: Collection[str] | None = None,
    augment: Callable[[Pool], tuple[Pool, dict[str, Any]]] | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train one space per CEBaB concept on `train_split` and save it under root/spaces/<name>.

    `trainer="none"` keeps pretrained MiniLM (identity projection): the baseline a trained
    space must beat on the nearest-counterfactual hit rate. `concepts` restricts which
    concepts are trained (the rest stay pretrained), e.g. to budget a full fine-tune.
    `augment` adds counterfactual groups to a pool that has none (`train_exclusive`): it
    returns the augmented pool and a report kept in the space's metadata (see `augment.py`).
    """
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; choose one of {TRAINERS}")
    pool = cebab_pool(train_split, data_dir, exclude_texts=exclude_texts)
    augmentation = None
    if augment is not None:
        pool, augmentation = augment(pool)  # generation time is in its report, not in build_seconds
    if pool.origins is None:
        raise ValueError("a CEBaB pool must carry origins")
    started = time.perf_counter()
    encoder = encoder or Encoder()
    base = encoder.encode(pool.texts)
    embed_s = time.perf_counter() - started
    names = pool.schema.names
    heads: dict[str, HeadProjection] = {}
    encoders: dict[str, Encoder] = {}
    training: dict[str, Any] = {}
    out = Path(root) / "spaces" / (name or space_name(str(train_split), trainer))
    full_dir = out.with_name(out.name + ".models")
    if trainer == "head":
        cfg = config or TrainConfig()
    elif trainer == "full":
        cfg = config or TrainConfig(lr=5e-6, batch_size=8, max_a=4, max_n=4, epochs=1, max_steps=100)
    else:
        cfg = config or TrainConfig(epochs=0)
    for c in names:
        if trainer == "none" or (concepts is not None and c not in concepts):
            continue
        if trainer == "head":
            heads[c], training[c] = train_head(base, pool.labels, pool.origins, c, names, cfg, log=log)
        else:
            training[c] = train_full(
                pool.texts,
                pool.labels,
                pool.origins,
                c,
                names,
                child_path(full_dir, c),
                base_model=encoder.model_name,
                config=cfg,
                log=log,
            )
            encoders[c] = Encoder(str(child_path(full_dir, c)))
    space = ConceptSpace(pool, encoder, heads=heads, encoders=encoders, base_vectors=base)
    space.build_indices()
    pretrained = ConceptSpace(pool, encoder, base_vectors=base)
    pretrained.build_indices()
    diagnostics = {
        "hit_rate": {c: space.nearest_counterfactual_hit_rate(c) for c in names},
        "hit_rate_pretrained": {c: pretrained.nearest_counterfactual_hit_rate(c) for c in names},
        "note": "share of pool pairs whose counterfactual is the base's nearest text with the target value "
        "and the base's confounders (query and exact duplicates excluded)",
    }
    meta = space.save(
        out,
        name=out.name,
        trainer=trainer,
        train_split=str(train_split),
        config=cfg.to_dict(),
        training=training,
        diagnostics=diagnostics,
        n_pairs=len(pool.pairs),
        **({"augmentation": augmentation} if augmentation is not None else {}),
        embed_seconds=round(embed_s, 2),
        build_seconds=round(time.perf_counter() - started, 2),
    )
    if full_dir.exists():
        import shutil

        shutil.rmtree(full_dir)
    if log:
        log(
            f"space {out} saved: hit rate {meta['diagnostics']['hit_rate']} "
            f"(pretrained {diagnostics['hit_rate_pretrained']}) in {meta['build_seconds']} s"
        )
    return out


def ensure_cebab_space(
    root: str | os.PathLike[str],
    train_split: str = "train_inclusive",
    trainer: str = "head",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    encoder: Encoder | None = None,
    log: Callable[[str], None] | None = None,
) -> ConceptSpace:
    """Load root/spaces/<default name>, training it first if it does not exist."""
    path = Path(root) / "spaces" / space_name(train_split, trainer)
    if not (path / META).exists():
        build_cebab_space(root, train_split, trainer, data_dir, encoder=encoder, log=log)
    space = ConceptSpace.load(path, encoder=encoder)
    _add_shipped_stacking(space, train_split, trainer)
    return space


SHIPPED_STACKING = Path(__file__).with_name("cebab_stacking.json")


def _add_shipped_stacking(space: ConceptSpace, train_split: str, trainer: str) -> None:
    """Give a freshly trained default space the stacking weights fit for the reference classifiers.

    Fitting them needs a benchmark run over CEBaB dev; shipping them (with their procedure) lets
    `stacked` use fitted weights on a fresh machine. Weights the space already holds win.
    """
    if not SHIPPED_STACKING.exists():
        return
    shipped = json.loads(SHIPPED_STACKING.read_text())
    if shipped.get("space_recipe") != {"train_split": train_split, "trainer": trainer}:
        return
    stacking = space.meta.setdefault("stacking", {})
    for key, fitted in shipped["stacking"].items():
        stacking.setdefault(key, {**fitted, "shipped_with_library": True})


def without_texts(space: ConceptSpace, texts: Collection[str]) -> ConceptSpace:
    """A copy of the space whose pool lacks `texts` (a benchmark's own texts), re-indexed.

    Pairs touching a removed text are dropped; vectors are reused, so this takes well under
    a second on a CEBaB pool.
    """
    drop = set(texts)
    keep = [i for i, t in enumerate(space.pool.texts) if t not in drop]
    if len(keep) == len(space.pool.texts):
        return space
    pool = space.pool.subset(keep)
    out = ConceptSpace(
        pool,
        space.encoder,
        heads=space.heads,
        encoders=space.encoders,
        meta=space.meta,
        index_kind=space.index_kind,
        approx_threshold=space.approx_threshold,
        base_vectors=space.base_vectors()[keep],
    )
    for c in pool.schema.names:
        if c in space.vectors:
            out.vectors[c] = space.vectors[c][keep]
    out.build_indices()
    out.directory = space.directory
    out.meta = dict(space.meta, excluded_texts=len(space.pool.texts) - len(keep))
    return out
