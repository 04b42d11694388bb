"""A small hand-made knowledge graph shared by the model tests."""

from __future__ import annotations

import torch

from simkgcl.graph import GraphData


def toy_graph() -> GraphData:
    """5 users, 6 items, 10 entities, 3 relations.

    Items 4 and 5 have no triples; entities 6..9 are KG-only; 6 -> 7 and 7 -> 8 are multi-hop
    triples between KG-only entities; user 2 has a duplicated interaction (must collapse).
    """
    users = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]
    items = [0, 1, 4, 1, 2, 3, 3, 5, 0, 2, 1, 3, 5]
    triples = [
        (0, 0, 6),
        (0, 1, 7),
        (0, 1, 2),
        (1, 0, 6),
        (1, 2, 8),
        (2, 2, 9),
        (2, 0, 6),
        (2, 0, 7),
        (3, 1, 1),
        (6, 2, 7),
        (7, 0, 8),
        (7, 1, 9),
        (9, 2, 0),
    ]
    h, r, t = (torch.tensor(col) for col in zip(*triples, strict=True))
    return GraphData(
        n_users=5,
        n_items=6,
        n_entities=10,
        n_relations=3,
        train_users=torch.tensor(users),
        train_items=torch.tensor(items),
        kg_heads=h,
        kg_relations=r,
        kg_tails=t,
    )


def dense_norm_adjacency(graph: GraphData) -> torch.Tensor:
    """D^-1/2 A D^-1/2 over users then items, built with dense loops (reference)."""
    n = graph.n_users + graph.n_items
    adj = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True):
        adj[u, graph.n_users + i] = 1.0
        adj[graph.n_users + i, u] = 1.0
    d = (adj.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * adj * d[None, :]
