"""Most popular: every user gets the items ranked by their number of training interactions.

The baseline the sparse-user work measures against (issue 17): for a user with one or two
training interactions, training popularity is a strong prior. The model has **no trainable
parameters**; the trainer sees that and runs no epochs (one validation, then the model is kept,
see :meth:`simkgcl.training.trainer.Trainer.fit`). It scores through the same contract as every
model, a dot product of final embeddings, with one-column tables:

    user row u = [1],  item row i = [c_i],  score(u, i) = c_i = #training interactions of i

so evaluation, the artifact, ``recommend``, ``export`` and HTTP serving need nothing special.
Ties (items with equal counts) are broken by ``torch.topk``, as for any model. The counts are a
buffer, part of ``state_dict``, so checkpoints restore them like weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from simkgcl.graph import GraphData
from simkgcl.keyspec import KeySpec
from simkgcl.models.base import Recommender


def item_popularity(train_items: Tensor, n_items: int) -> Tensor:
    """Training interactions per item, float32 (n_items,)."""
    return torch.bincount(train_items.long(), minlength=n_items).to(torch.float32)


class Pop(Recommender):
    """Scores every item by its training count, the same for every user."""

    name: ClassVar[str] = "pop"
    keys: ClassVar[dict[str, KeySpec]] = {}

    def __init__(self, graph: GraphData, config: Mapping[str, Any]):
        super().__init__(graph, config)
        self.register_buffer("popularity", item_popularity(graph.train_items, self.n_items))

    def forward(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        raise RuntimeError("the pop model has nothing to train")

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        ones = torch.ones(self.n_users, 1, device=self.popularity.device)
        return ones, self.popularity.unsqueeze(1)
