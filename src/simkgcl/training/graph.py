"""GraphData (what a model is built from) out of a dataset and its split."""

from __future__ import annotations

import numpy as np
import torch

from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.models.base import GraphData


def build_graph(dataset: KnowledgeDataset, split: Split) -> GraphData:
    """Training interactions of ``split`` and all KG triples of ``dataset`` as int64 tensors.

    Only the training part of the split enters the graph: validation and test interactions must
    never leak into propagation.
    """
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
