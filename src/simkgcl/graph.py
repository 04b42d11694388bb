"""GraphData: what every model is built from, and its builder from a dataset's split.

A model never sees files or a dataset object: it receives a :class:`GraphData` (counts and the
training interactions and KG triples as int64 tensors, entity i == item i). Only the training
part of a split enters it, so validation and test interactions never leak into propagation.
The sparse operators that models build from it live in :mod:`simkgcl.models.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # types only: a model importing GraphData must not import the data layer
    from simkgcl.data.dataset import KnowledgeDataset, Split


@dataclass(frozen=True)
class GraphData:
    """Training interactions and KG triples as int64 tensors (entity i == item i)."""

    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    train_users: Tensor  # (n_train,)
    train_items: Tensor  # (n_train,)
    kg_heads: Tensor  # (n_triples,)
    kg_relations: Tensor  # (n_triples,)
    kg_tails: Tensor  # (n_triples,)

    def to(self, device: torch.device | str) -> GraphData:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, Tensor) else value
        return GraphData(**moved)


def build_graph(dataset: KnowledgeDataset, split: Split) -> GraphData:
    """Training interactions of ``split`` and all KG triples of ``dataset`` as int64 tensors."""
    triples = np.asarray(dataset.triples, dtype=np.int64).reshape(-1, 3)
    return GraphData(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        n_entities=max(dataset.n_entities, dataset.n_items),
        n_relations=dataset.n_relations,
        train_users=torch.from_numpy(np.ascontiguousarray(split.train.users, dtype=np.int64)),
        train_items=torch.from_numpy(np.ascontiguousarray(split.train.items, dtype=np.int64)),
        kg_heads=torch.from_numpy(np.ascontiguousarray(triples[:, 0])),
        kg_relations=torch.from_numpy(np.ascontiguousarray(triples[:, 1])),
        kg_tails=torch.from_numpy(np.ascontiguousarray(triples[:, 2])),
    )
