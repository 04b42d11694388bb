"""Top-K ranking metrics with RecBole's definitions, from a hits matrix.

``hits[u, i]`` is True when the item ranked at position ``i`` (0-based) for user ``u`` is one of
the user's held-out items; ``n_pos[u]`` is how many held-out items the user has. Every function
returns per-user values (float64) for each K; the evaluator sums them and divides by the number
of users with held-out items. ItemCoverage is a property of all lists together, so the evaluator
computes it from the recommended item ids instead.

Definitions (K = cut-off, hits@K = hits among the first K positions):

* Recall@K = hits@K / n_pos
* Precision@K = hits@K / K
* Hit@K = 1 if hits@K > 0 else 0
* MRR@K = 1 / (position of the first hit, 1-based) if it lies within K, else 0
* NDCG@K = sum over hit positions p <= K of 1/log2(p+1), divided by the same sum over the first
  min(n_pos, K) positions (binary gains)
* MAP@K = sum over hit positions p <= K of Precision@p, divided by min(n_pos, K)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RANKING_METRICS = ("Recall", "NDCG", "MRR", "Hit", "Precision", "MAP")


def per_user_metrics(hits: Tensor, n_pos: Tensor, names: Sequence[str],
                     topk: Sequence[int]) -> dict[str, Tensor]:
    """``{"NAME@K": per-user values}`` for each ranking metric name and each K.

    ``hits`` is (users, max K) bool, ``n_pos`` is (users,) int with every entry >= 1.
    """
    max_k = hits.shape[1]
    if max(topk) > max_k:
        raise ValueError(f"hits has {max_k} columns but K={max(topk)} was asked")
    h = hits.to(torch.float64)
    n_pos = n_pos.to(torch.float64)
    device = h.device
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64, device=device)  # 1-based positions
    cum_hits = h.cumsum(1)
    out: dict[str, Tensor] = {}
    if "NDCG" in names:
        discount = 1.0 / torch.log2(ranks + 1.0)
        dcg = (h * discount).cumsum(1)
        ideal = discount.cumsum(0)  # ideal[j] = best DCG with j+1 relevant items on top
    if "MAP" in names:
        ap = (h * cum_hits / ranks).cumsum(1)
    if "MRR" in names:
        any_hit = hits.any(1)
        first = torch.where(any_hit, hits.to(torch.int8).argmax(1), torch.full_like(n_pos, max_k,
                                                                                  dtype=torch.long))
    for name in names:
        for k in topk:
            col = k - 1
            hits_k = cum_hits[:, col]
            if name == "Recall":
                value = hits_k / n_pos
            elif name == "Precision":
                value = hits_k / k
            elif name == "Hit":
                value = (hits_k > 0).to(torch.float64)
            elif name == "MRR":
                value = torch.where(first < k, 1.0 / (first.to(torch.float64) + 1.0),
                                    torch.zeros_like(n_pos))
            elif name == "NDCG":
                n_ideal = torch.clamp(n_pos, max=k).long()
                value = dcg[:, col] / ideal[n_ideal - 1]
            elif name == "MAP":
                value = ap[:, col] / torch.clamp(n_pos, max=k)
            else:
                raise ValueError(f"unknown ranking metric {name!r}")
            out[f"{name}@{k}"] = value
    return out
