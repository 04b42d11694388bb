"""A deliberately plain SGL (dense matrices, Python loops over batch rows).

Written from the model description (RecBole 1.2.1's SGL: LightGCN views on the full and on two
thinned graphs, BPR summed, EmbLoss, InfoNCE of the batch rows against every row of view 2),
independently of ``simkgcl.models``. The thinned graphs are given as lists of kept (user, item)
pairs, so the fast model's own draws can be replayed here. Slow on purpose; tiny graphs only.
"""

from __future__ import annotations

import math

import torch


def dense_graph(n_users: int, n_items: int, pairs) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` (``1e-7`` added to the degrees) of the bipartite graph of ``pairs``."""
    n = n_users + n_items
    adj = torch.zeros(n, n, dtype=torch.float64)
    for u, i in pairs:
        adj[u, n_users + i] = 1.0
        adj[n_users + i, u] = 1.0
    scale = [1.0 / math.sqrt(float(adj[r].sum()) + 1e-7) for r in range(n)]
    for r in range(n):
        for c in range(n):
            adj[r, c] = adj[r, c] * scale[r] * scale[c]
    return adj


def mean_of_layers(x: torch.Tensor, graphs: list[torch.Tensor]) -> torch.Tensor:
    """(x + A_1 x + A_2 A_1 x + ...) / (L + 1)."""
    layers = [x]
    for adj in graphs:
        layers.append(adj @ layers[-1])
    return sum(layers) / len(layers)


def reference_views(x, n_users, n_items, train_pairs, view_pairs, n_layers):
    """(main, view 1, view 2); ``view_pairs[v]``: one list of pairs per graph (1 or L graphs)."""
    main = mean_of_layers(x, [dense_graph(n_users, n_items, train_pairs)] * n_layers)
    views = []
    for graphs in view_pairs:
        dense = [dense_graph(n_users, n_items, pairs) for pairs in graphs]
        views.append(mean_of_layers(x, dense * n_layers if len(dense) == 1 else dense))
    return main, views[0], views[1]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def reference_losses(views, x, n_users, users, pos, neg, reg_weight, ssl_weight, tau):
    """RecBole's three terms, row by row."""
    main, view1, view2 = views
    bpr = 0.0
    for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        diff = main[u] @ main[n_users + p] - main[u] @ main[n_users + n]
        bpr = bpr - torch.log(torch.sigmoid(diff))
    layer0 = torch.stack([x[u] for u in users.tolist()])
    pos0 = torch.stack([x[n_users + p] for p in pos.tolist()])
    neg0 = torch.stack([x[n_users + n] for n in neg.tolist()])
    reg = (layer0.norm() + pos0.norm() + neg0.norm()) / len(users)

    def nce(ids, offset, count):
        total = 0.0
        for r in ids.tolist():
            anchor = _unit(view1[offset + r])
            logits = torch.stack([anchor @ _unit(view2[offset + j]) / tau for j in range(count)])
            total = total - torch.log(torch.exp(logits[r]) / torch.exp(logits).sum())
        return total

    n_items = main.shape[0] - n_users
    ssl = nce(users, 0, n_users) + nce(pos, n_users, n_items)
    return {"bpr": bpr, "reg": reg_weight * reg, "ssl": ssl_weight * ssl}
