"""Trainers for concept spaces: a projection head on frozen embeddings, or a full fine-tune.

Both minimise the ordered contrastive loss (`loss.py`) over the T/C/A/N groups of every
query that has a true counterfactual in the pool (`groups.py`), one space per treated concept.

- `train_head`: a d x d linear map (initialised to the identity, so step 0 *is* the
  pretrained space) on cached MiniLM embeddings. Vectorised over a batch; trains in
  seconds on CPU. It is stored as plain numpy (W, b) so inference needs no torch.
- `train_full`: fine-tunes every weight of all-MiniLM-L6-v2 with sentence-transformers'
  model in a plain torch loop. Far slower on CPU; `max_steps` bounds it.

Paper defaults (tau 0.1, lr 5e-6, 8 epochs) suit the full fine-tune. A freshly initialised
head barely moves at lr 5e-6, so the head's defaults are lr 1e-3, 4 epochs, batches of
128 queries with 8 sampled A and N members each: the loss flattens by then, and the
service's first start must train all four heads in well under a minute on 2 busy cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from explainers.matching.groups import QueryGroups, build_groups, group_sizes
from explainers.matching.loss import DEFAULT_LAMBDAS, padded_groups, padded_loss
from explainers.progress import Progress


@dataclass
class TrainConfig:
    """Hyper-parameters of one space; kept verbatim in the space metadata."""

    tau: float = 0.1
    lambdas: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LAMBDAS))
    lr: float = 1e-3
    epochs: int = 4
    batch_size: int = 128
    max_a: int = 8
    max_n: int = 8
    weight_decay: float = 0.0
    seed: int = 0
    max_steps: int | None = None  # full fine-tune only: a budget on CPU

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeadProjection:
    """x -> normalize(x W^T + b); identity when untrained."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float32) @ self.weight.T + self.bias
        return (z / np.clip(np.linalg.norm(z, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, weight=self.weight, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> HeadProjection:
        data = np.load(path)
        return cls(data["weight"].astype(np.float32), data["bias"].astype(np.float32))


def _as_dict_groups(groups: Sequence[QueryGroups]) -> list[dict[str, np.ndarray]]:
    return [{"T": g.T, "C": g.C, "A": g.A, "N": g.N} for g in groups]


def train_head(
    embeddings: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    origins: Sequence[str],
    treated: str,
    concepts: Sequence[str],
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[HeadProjection, dict]:
    """Train one concept's projection head; returns it and training facts (loss curve, sizes, time)."""
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    groups = build_groups(labels, origins, treated, concepts, max_a=cfg.max_a, max_n=cfg.max_n, seed=cfg.seed)
    d = embeddings.shape[1]
    lin = torch.nn.Linear(d, d)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(d))
        lin.bias.zero_()
    table = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    opt = torch.optim.AdamW(lin.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    dgroups = _as_dict_groups(groups)
    curve: list[float] = []
    bar = Progress(
        (cfg.epochs if groups else 0) * -(-len(groups) // cfg.batch_size), f"head {treated}", unit="batch"
    )
    for epoch in range(cfg.epochs if groups else 0):
        order = rng.permutation(len(groups))
        losses = []
        for s in range(0, len(order), cfg.batch_size):
            batch = [dgroups[i] for i in order[s : s + cfg.batch_size]]
            q_idx = torch.tensor([groups[i].query for i in order[s : s + cfg.batch_size]], dtype=torch.long)
            padded = padded_groups(batch)
            used = torch.unique(torch.cat([q_idx] + [idx.flatten() for idx, _ in padded.values()]))
            remap = torch.full((len(table),), -1, dtype=torch.long)
            remap[used] = torch.arange(len(used))
            proj = lin(table[used])
            padded_local = {g: (remap[idx], mask) for g, (idx, mask) in padded.items()}
            loss = padded_loss(proj[remap[q_idx]], proj, padded_local, tau=cfg.tau, lambdas=cfg.lambdas)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(note=f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
        curve.append(round(float(np.mean(losses)), 4))
        if log:
            log(f"[{treated}] epoch {epoch + 1}/{cfg.epochs} loss {curve[-1]}")
    bar.close()
    head = HeadProjection(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy())
    facts = {
        "queries": len(groups),
        "group_sizes": group_sizes(groups),
        "loss_curve": curve,
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    return head, facts


def train_full(
    texts: Sequence[str],
    labels: Sequence[Mapping[str, str]],
    origins: Sequence[str],
    treated: str,
    concepts: Sequence[str],
    out_dir: Path,
    *,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
    device: str = "cpu",
    time_budget_s: float | None = None,
) -> dict:
    """Fine-tune every weight of a sentence-transformers model for one concept; saves it to out_dir."""
    from sentence_transformers import SentenceTransformer

    from explainers.embeddings import resolve_model

    cfg = config or TrainConfig(lr=5e-6, batch_size=8, max_a=4, max_n=4)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    groups = build_groups(labels, origins, treated, concepts, max_a=cfg.max_a, max_n=cfg.max_n, seed=cfg.seed)
    model = SentenceTransformer(resolve_model(base_model), device=device)
    model.float()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    dgroups = _as_dict_groups(groups)
    curve: list[float] = []
    steps = 0
    planned = (cfg.epochs if groups else 0) * -(-len(groups) // cfg.batch_size)
    bar = Progress(
        min(planned, cfg.max_steps) if cfg.max_steps is not None else planned, f"full {treated}", unit="step"
    )
    for epoch in range(cfg.epochs if groups else 0):
        order = rng.permutation(len(groups))
        losses = []
        for s in range(0, len(order), cfg.batch_size):
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                break
            sel = order[s : s + cfg.batch_size]
            batch = [dgroups[i] for i in sel]
            q_idx = [groups[i].query for i in sel]
            padded = padded_groups(batch)
            used = sorted(set(q_idx) | {int(j) for idx, m in padded.values() for j in idx[m].tolist()})
            pos = {j: k for k, j in enumerate(used)}
            prep = getattr(model, "preprocess", None) or model.tokenize  # tokenize is deprecated in v5+
            feats = {
                k: v.to(device) if hasattr(v, "to") else v for k, v in prep([texts[j] for j in used]).items()
            }
            emb = model(feats)["sentence_embedding"]
            remap = torch.zeros(max(used) + 1, dtype=torch.long)
            remap[torch.tensor(used)] = torch.arange(len(used))
            local = {
                g: (remap[idx.clamp(max=max(used))].to(device), m.to(device))
                for g, (idx, m) in padded.items()
            }
            loss = padded_loss(emb[[pos[j] for j in q_idx]], emb, local, tau=cfg.tau, lambdas=cfg.lambdas)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            steps += 1
            bar.update(note=f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
        if losses:
            curve.append(round(float(np.mean(losses)), 4))
            if log:
                log(f"[{treated}] full epoch {epoch + 1} steps {steps} loss {curve[-1]}")
        if (cfg.max_steps is not None and steps >= cfg.max_steps) or (
            time_budget_s is not None and time.perf_counter() - started > time_budget_s
        ):
            break
    bar.close()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return {
        "epochs_done": len(curve),
        "queries": len(groups),
        "group_sizes": group_sizes(groups),
        "loss_curve": curve,
        "steps": steps,
        "train_seconds": round(time.perf_counter() - started, 2),
    }


def project(x: np.ndarray, head: HeadProjection | None) -> np.ndarray:
    """Apply a head (or nothing) and return unit vectors."""
    if head is None:
        return (x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)
    return head(x)
