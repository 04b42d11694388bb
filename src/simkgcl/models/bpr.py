"""BPR matrix factorisation: the simplest baseline the engine is checked with.

Loss (RecBole's BPR convention): ``bpr`` = mean over the batch of ``-log(1e-10 + sigmoid(pos -
neg))``; ``reg`` = ``reg_weight`` x RecBole's ``EmbLoss`` (unsquared L2 norms of the batch's user,
positive and negative rows, summed, divided by the batch size). RecBole's BPR has no such term
(it relies on ``weight_decay``); ``reg_weight`` defaults to 0 so the default model is RecBole's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec, float_in, int_in
from simkgcl.models.base import Recommender, user_item_tables

BPR_GAMMA = 1e-10


def bpr_mean(pos_scores: Tensor, neg_scores: Tensor, gamma: float = BPR_GAMMA) -> Tensor:
    """RecBole's BPRLoss: batch mean of -log(gamma + sigmoid(pos - neg)) (SELFRec: gamma 1e-5)."""
    return -torch.log(gamma + torch.sigmoid(pos_scores - neg_scores)).mean()


def emb_loss(*embeddings: Tensor, require_pow: bool = False) -> Tensor:
    """RecBole's EmbLoss: sum of L2 norms (squared and halved if ``require_pow``) / batch size."""
    batch = embeddings[-1].shape[0]
    if require_pow:
        total = sum(torch.linalg.vector_norm(e).pow(2) for e in embeddings) / 2
    else:
        total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / batch


class BPR(Recommender):
    """User and item embedding tables scored by dot product (Xavier-uniform initialisation)."""

    name: ClassVar[str] = "bpr"
    keys: ClassVar[dict[str, KeySpec]] = {
        "embedding_size": KeySpec(64, int_in(1), "embedding dimension d"),
        "reg_weight": KeySpec(0.0, float_in(0.0), "weight of the L2 term on the batch's rows"),
    }

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        cfg = self.settings(config)
        dim = int(cfg["embedding_size"])
        self.reg_weight = float(cfg["reg_weight"])
        self.user_embedding, self.item_embedding = user_item_tables(
            self.n_users, self.n_items, dim
        )

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        u = self.user_embedding(users)
        p = self.item_embedding(pos_items)
        n = self.item_embedding(neg_items)
        loss = bpr_mean((u * p).sum(-1), (u * n).sum(-1))
        return {"bpr": loss, "reg": self.reg_weight * emb_loss(u, p, n)}

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight
