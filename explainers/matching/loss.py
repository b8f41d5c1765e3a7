"""The ordered contrastive loss of Gat et al. (2024) for concept spaces.

    L = sum over (a, b) of lambda_ab * -log(S_a / (S_a + S_b)),
    S_G = mean over k in G of exp(cos(q, k) / tau)

Each term asks the query to be closer, on average, to group a than to group b. It is
computed in log space (log S_G is a logsumexp minus log |G|, and -log(S_a/(S_a+S_b)) is
softplus(log S_b - log S_a)) so small tau does not overflow. A term with an empty group
contributes nothing. The paper's defaults weigh (T,C), (T,A), (A,C) by 1; a probe found the
(A,C) term hurt matching on CEBaB, so `PAPER_LAMBDAS` and `DEFAULT_LAMBDAS` differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

PAIRS = (("T", "C"), ("T", "A"), ("T", "N"), ("A", "C"), ("A", "N"), ("C", "N"))
PAPER_LAMBDAS: dict[str, float] = {"TC": 1.0, "TA": 1.0, "AC": 1.0}
DEFAULT_LAMBDAS: dict[str, float] = {"TC": 1.0, "TA": 1.0, "AN": 1.0}


def log_group_score(q: torch.Tensor, members: torch.Tensor, tau: float) -> torch.Tensor:
    """log S_G for one query vector (d,) against its group members (k, d); vectors need not be unit."""
    cos = F.cosine_similarity(q.unsqueeze(0), members, dim=-1)
    return torch.logsumexp(cos / tau, dim=0) - math.log(members.shape[0])


def ordered_contrastive_loss(
    q: torch.Tensor,
    groups: Mapping[str, torch.Tensor],
    *,
    tau: float = 0.1,
    lambdas: Mapping[str, float] = DEFAULT_LAMBDAS,
) -> torch.Tensor:
    """The loss for one query; `groups` maps "T", "C", "A", "N" to (k, d) tensors (k may be 0)."""
    logs = {g: log_group_score(q, m, tau) for g, m in groups.items() if m is not None and m.shape[0] > 0}
    total = q.new_zeros(())
    for a, b in PAIRS:
        lam = float(lambdas.get(a + b, 0.0))
        if lam == 0.0 or a not in logs or b not in logs:
            continue
        total = total + lam * F.softplus(logs[b] - logs[a])
    return total


def batch_loss(
    queries: torch.Tensor,
    members: torch.Tensor,
    group_index: Sequence[Mapping[str, torch.Tensor]],
    *,
    tau: float = 0.1,
    lambdas: Mapping[str, float] = DEFAULT_LAMBDAS,
) -> torch.Tensor:
    """Mean loss over a batch: query i's groups are rows of `members` named by `group_index[i]`."""
    losses = []
    for i, idx in enumerate(group_index):
        groups = {g: members[ix] for g, ix in idx.items()}
        losses.append(ordered_contrastive_loss(queries[i], groups, tau=tau, lambdas=lambdas))
    return torch.stack(losses).mean() if losses else queries.new_zeros(())


def padded_groups(
    groups: Sequence[Mapping[str, Sequence[int]]], names: Sequence[str] = ("T", "C", "A", "N")
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pad each group's index lists to a (B, m) long tensor plus a (B, m) bool mask of real entries."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for g in names:
        lists = [list(map(int, x.get(g, []))) for x in groups]
        m = max([len(x) for x in lists] + [1])
        idx = torch.zeros((len(lists), m), dtype=torch.long)
        mask = torch.zeros((len(lists), m), dtype=torch.bool)
        for i, xs in enumerate(lists):
            if xs:
                idx[i, : len(xs)] = torch.tensor(xs, dtype=torch.long)
                mask[i, : len(xs)] = True
        out[g] = (idx, mask)
    return out


def padded_loss(
    queries: torch.Tensor,
    table: torch.Tensor,
    padded: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    tau: float = 0.1,
    lambdas: Mapping[str, float] = DEFAULT_LAMBDAS,
) -> torch.Tensor:
    """Vectorised `ordered_contrastive_loss` averaged over a batch.

    `queries` (B, d); `table` (n, d) holds every member vector; `padded[g]` = (idx (B, m), mask (B, m))
    from `padded_groups`. Equal to the mean of the per-query loss (tested), but one tensor op per group.
    """
    qn = F.normalize(queries, dim=-1)
    tn = F.normalize(table, dim=-1)
    logs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for g, (idx, mask) in padded.items():
        cos = torch.einsum("bd,bmd->bm", qn, tn[idx]) / tau
        cos = cos.masked_fill(~mask, float("-inf"))
        count = mask.sum(dim=1)
        has = count > 0
        lse = torch.logsumexp(torch.where(has[:, None], cos, torch.zeros_like(cos)), dim=1)
        logs[g] = (lse - torch.log(count.clamp(min=1).to(cos.dtype)), has)
    total = queries.new_zeros(queries.shape[0])
    for a, b in PAIRS:
        lam = float(lambdas.get(a + b, 0.0))
        if lam == 0.0 or a not in logs or b not in logs:
            continue
        (la, ha), (lb, hb) = logs[a], logs[b]
        term = F.softplus(lb - la)
        total = total + lam * torch.where(ha & hb, term, torch.zeros_like(term))
    return total.mean()
