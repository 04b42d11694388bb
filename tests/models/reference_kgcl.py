"""A deliberately plain KGCL (dense matrices, Python loops over items, slots and rows).

Written from the authors' code (KGCL-SIGIR22: ``GAT.forward_relation``, ``KGCL.computer`` /
``view_computer_all`` / ``bpr_loss`` / ``calc_kg_loss_transE``, ``Contrast.grace_loss`` /
``get_ui_views_weighted``), independently of the fast model, to check its embeddings, losses and
gradients. Slow on purpose; only for tiny graphs. Random draws are inputs: the encoder's four
dropout masks per call (``EncoderDraws``), the graph-dropout mask, the views' kept slots and
kept items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from simkgcl.graph import GraphData


@dataclass
class EncoderDraws:
    """Keep masks (0/1) of one encoder call: item rows (I, d), neighbour rows (I, K, d),
    attention weights (I, K), output rows (I, d); applied with the 1/(1 - rate) scale."""

    items: torch.Tensor
    neighbours: torch.Tensor
    attention: torch.Tensor
    output: torch.Tensor
    rate: float


def reference_neighbours(graph: GraphData, width: int) -> list[list[tuple[int, int]]]:
    """Each item's first ``width`` distinct (relation, tail) pairs in the triples' order."""
    per_item: list[list[tuple[int, int]]] = [[] for _ in range(graph.n_items)]
    seen = set()
    for h, r, t in zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True):
        if (h, r, t) in seen:
            continue
        seen.add((h, r, t))
        if h < graph.n_items and len(per_item[h]) < width:
            per_item[h].append((r, t))
    return per_item


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return x if x >= 0 else 0.2 * x


def reference_item_kg(params: dict, neighbours, width: int, kept_slots: torch.Tensor,
                      draws: EncoderDraws | None = None) -> torch.Tensor:
    """``kg(i)`` for every item, one item and one slot at a time."""
    item, entity, relation = params["item"], params["entity"], params["relation"]
    fc_w, fc_b = params["fc_weight"], params["fc_bias"]
    pad = entity.shape[0] - 1
    scale = 1.0 / (1.0 - draws.rate) if draws is not None else 1.0
    rows = []
    for i in range(item.shape[0]):
        x = item[i] if draws is None else item[i] * draws.items[i] * scale
        ys, logits = [], []
        for k in range(width):
            kept = k < len(neighbours[i]) and bool(kept_slots[i, k])
            r, t = neighbours[i][k] if k < len(neighbours[i]) else (0, pad)
            if not kept:  # drop_edge_random: a dropped tail becomes the padding entity
                t = pad
            y = entity[t] if draws is None else entity[t] * draws.neighbours[i, k] * scale
            hidden = fc_w @ torch.cat([x, y]) + fc_b
            z = _leaky(torch.dot(relation[r], hidden))
            logits.append(z if kept else torch.tensor(-9e15, dtype=x.dtype))
            ys.append(y)
        weights = torch.softmax(torch.stack(logits), dim=0)
        if draws is not None:
            weights = weights * draws.attention[i] * scale
        out = x + sum(weights[k] * ys[k] for k in range(width))
        rows.append(out if draws is None else out * draws.output[i] * scale)
    return torch.stack(rows)


def reference_adjacency(graph: GraphData, kept_items: set[int] | None = None,
                        kept_pairs: set[tuple[int, int]] | None = None) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` (no epsilon) of the training pairs whose item is kept (or the pairs
    given), over users then items."""
    n_users = graph.n_users
    n = n_users + graph.n_items
    adj = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True):
        if kept_items is not None and i not in kept_items:
            continue
        if kept_pairs is not None and (u, i) not in kept_pairs:
            continue
        adj[u, n_users + i] = adj[n_users + i, u] = 1.0
    out = torch.zeros_like(adj)
    degree = adj.sum(1)
    for a in range(n):
        for b in range(n):
            if adj[a, b]:
                out[a, b] = 1.0 / math.sqrt(degree[a] * degree[b])
    return out


def reference_propagate(params: dict, item_rows: torch.Tensor, graph_matrix: torch.Tensor,
                        n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([params["user"], item_rows])
    layers = [x]
    for _ in range(n_layers):
        layers.append(graph_matrix @ layers[-1])
    mean = sum(layers) / (n_layers + 1)
    n_users = params["user"].shape[0]
    return mean[:n_users], mean[n_users:]


def reference_keep_probability(stability: torch.Tensor, ui_drop_rate: float) -> torch.Tensor:
    """``get_ui_views_weighted``'s per-item keep probability, written out."""
    w = [math.exp(float(s)) for s in stability]
    lo, hi = min(w), max(w)
    c = [max((v - lo) / (hi - lo), 0.3) for v in w]
    mean_c = sum(c) / len(c)
    return torch.tensor([min((1.0 - ui_drop_rate) / mean_c * v, 0.95) for v in c],
                        dtype=torch.float64)


def reference_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.dot(a[i], b[i]) / (a[i].norm() * b[i].norm())
                        for i in range(a.shape[0])])


def reference_grace(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """``Contrast.grace_loss`` (sum), one row and one pair at a time."""
    def semi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        total = a.new_zeros(())
        for i in range(a.shape[0]):
            # the authors' "sum(refl) + sum(between) - refl_ii", without the subtraction
            # (which cancels every digit when exp(1/tau) dominates)
            refl = [torch.exp(torch.dot(a[i], a[j]) / tau) for j in range(a.shape[0]) if j != i]
            between = [torch.exp(torch.dot(a[i], b[j]) / tau) for j in range(a.shape[0])]
            total = total - torch.log(between[i] / (sum(refl) + sum(between)))
        return total

    return 0.5 * (semi(z1, z2) + semi(z2, z1))


def reference_losses(params: dict, main, view1, view2, users, pos, neg, *, reg_weight: float,
                     cl_rate: float, tau: float) -> dict[str, torch.Tensor]:
    """bpr (sum of softplus), reg (half squared norms / batch), cl (GRACE on users and items)."""
    user_all, item_all = main
    bpr = user_all.new_zeros(())
    squares = user_all.new_zeros(())
    for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        diff = torch.dot(user_all[u], item_all[p]) - torch.dot(user_all[u], item_all[n])
        bpr = bpr + torch.log1p(torch.exp(-diff))
        squares = squares + (params["user"][u].pow(2).sum() + params["item"][p].pow(2).sum()
                             + params["item"][n].pow(2).sum())
    cl = (reference_grace(view1[0][users], view2[0][users], tau)
          + reference_grace(view1[1][pos], view2[1][pos], tau))
    return {"bpr": bpr, "reg": reg_weight * squares / 2 / len(users), "cl": cl_rate * cl}


def reference_transe(params: dict, heads, relations, pos_tails, neg_tails,
                     reg_weight: float) -> torch.Tensor:
    """``calc_kg_loss_transE`` one triple at a time."""
    item, entity, relation = params["item"], params["entity"], params["relation"]
    n = len(heads)
    loss = item.new_zeros(())
    l2 = item.new_zeros(())
    for h, r, tp, tn in zip(heads.tolist(), relations.tolist(), pos_tails.tolist(),
                            neg_tails.tolist(), strict=True):
        pos = (item[h] + relation[r] - entity[tp]).pow(2).sum()
        neg = (item[h] + relation[r] - entity[tn]).pow(2).sum()
        loss = loss - torch.log(torch.sigmoid(neg - pos)) / n
        l2 = l2 + (item[h].pow(2).sum() + relation[r].pow(2).sum() + entity[tp].pow(2).sum()
                   + entity[tn].pow(2).sum()) / 2 / n
    return loss + reg_weight * l2
