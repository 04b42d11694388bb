"""A deliberately plain KGAT (dense N x N matrices, Python loops over edges and nodes).

Written from RecBole 1.2.1's KGAT as its maths reads (the model file's docstring states it),
independently of the fast model, to check its attention, embeddings, losses and gradients.
Slow on purpose; only for tiny graphs. Parameters come in as a dict of tensors:
``user`` (U x d), ``entity`` (E x d), ``relation`` (C x k), ``trans_w`` (C x d*k) and
``layers``: per layer a dict of (weight, bias) pairs, ``W1``/``W2`` (bi) or ``W`` (gcn,
graphsage). Message dropout is off unless per-layer keep masks (N x width) are given.
"""

from __future__ import annotations

import math

import torch

from simkgcl.graph import GraphData


def ckg_edges(graph: GraphData) -> list[tuple[int, int, int]]:
    """Every CKG edge (head node, relation, tail node): users first, then entities; the
    interaction relation is the last relation id, in both directions."""
    n_users, ui = graph.n_users, graph.n_relations
    edges = []
    for u, i in zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True):
        edges.append((u, ui, n_users + i))
        edges.append((n_users + i, ui, u))
    for h, r, t in zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True):
        edges.append((n_users + h, r, n_users + t))
    return edges


def initial_attention(graph: GraphData) -> torch.Tensor:
    """Dense A0: for each relation, its adjacency with rows divided by their sums; summed."""
    n = graph.n_users + graph.n_entities
    edges = ckg_edges(graph)
    total = torch.zeros(n, n, dtype=torch.float64)
    for relation in sorted({r for _, r, _ in edges}):
        adjacency = torch.zeros(n, n, dtype=torch.float64)
        for h, r, t in edges:
            if r == relation:
                adjacency[h, t] += 1.0
        sums = adjacency.sum(dim=1, keepdim=True)
        total += torch.where(sums > 0, adjacency / sums.clamp_min(1.0), adjacency)
    return total


def edge_score(params: dict, h: int, r: int, t: int) -> torch.Tensor:
    """pi(h, r, t) = (x_t W_r) . tanh(x_h W_r + e_r), written out per component."""
    table = torch.cat([params["user"], params["entity"]])
    dim, k = table.shape[1], params["relation"].shape[1]
    w = params["trans_w"][r].reshape(dim, k)
    score = table.new_zeros(())
    for b in range(k):
        head_b = sum(table[h, a] * w[a, b] for a in range(dim)) + params["relation"][r, b]
        tail_b = sum(table[t, a] * w[a, b] for a in range(dim))
        score = score + tail_b * torch.tanh(head_b)
    return score


def attention(graph: GraphData, params: dict) -> torch.Tensor:
    """Dense A: per head, a softmax over its tails of the summed scores of the edges to them."""
    n = graph.n_users + graph.n_entities
    scores = torch.zeros(n, n, dtype=torch.float64)  # no gradient: A is a constant
    linked = torch.zeros(n, n, dtype=torch.bool)
    for h, r, t in ckg_edges(graph):
        scores[h, t] = scores[h, t] + edge_score(params, h, r, t).detach()
        linked[h, t] = True
    out = torch.zeros(n, n, dtype=torch.float64)
    for h in range(n):
        tails = [t for t in range(n) if linked[h, t]]
        if tails:
            exps = [math.exp(scores[h, t].item()) for t in tails]
            for t, e in zip(tails, exps, strict=True):
                out[h, t] = e / sum(exps)
    return out


def _linear(x: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    weight, bias = pair
    return x @ weight.t() + bias


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.01 * x)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([row / torch.clamp(row.norm(), min=1e-12) for row in x])


def embeddings(a: torch.Tensor, params: dict, kind: str,
               masks: list[torch.Tensor] | None = None, rate: float = 0.0) -> torch.Tensor:
    """Final rows of every node: layer 0 and each layer's L2-normalised output, side by side."""
    ego = torch.cat([params["user"], params["entity"]])
    outputs = [ego]
    for layer, weights in enumerate(params["layers"]):
        side = a @ ego
        if kind == "bi":
            ego = _leaky(_linear(ego + side, weights["W1"])) + _leaky(
                _linear(ego * side, weights["W2"]))
        elif kind == "gcn":
            ego = _leaky(_linear(ego + side, weights["W"]))
        else:
            ego = _leaky(_linear(torch.cat([ego, side], dim=1), weights["W"]))
        if masks is not None:
            ego = ego * masks[layer] / (1.0 - rate)
        outputs.append(_unit_rows(ego))
    return torch.cat(outputs, dim=1)


def cf_losses(final: torch.Tensor, n_users: int, users, pos, neg,
              reg_weight: float) -> dict[str, torch.Tensor]:
    """``bpr`` and ``reg`` of one interaction batch from the final rows."""
    terms, u_rows, p_rows, n_rows = [], [], [], []
    for u, p, q in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        urow, prow, nrow = final[u], final[n_users + p], final[n_users + q]
        diff = (urow * prow).sum() - (urow * nrow).sum()
        terms.append(-torch.log(1e-10 + 1.0 / (1.0 + torch.exp(-diff))))
        u_rows.append(urow)
        p_rows.append(prow)
        n_rows.append(nrow)
    norms = sum(torch.sqrt((torch.stack(rows) ** 2).sum()) for rows in (u_rows, p_rows, n_rows))
    return {"bpr": torch.stack(terms).mean(), "reg": reg_weight * norms / len(terms)}


def kg_losses(params: dict, heads, relations, pos_tails, neg_tails,
              reg_weight: float) -> dict[str, torch.Tensor]:
    """``kg`` and ``kg_reg`` (TransR) of one batch of triples (entity ids), triple by triple."""
    entity, dim = params["entity"], params["entity"].shape[1]
    k = params["relation"].shape[1]
    losses, hs, rs, ps, ns = [], [], [], [], []
    for h, r, p, q in zip(heads.tolist(), relations.tolist(), pos_tails.tolist(),
                          neg_tails.tolist(), strict=True):
        w = params["trans_w"][r].reshape(dim, k)
        h_e, p_e, n_e, r_e = entity[h] @ w, entity[p] @ w, entity[q] @ w, params["relation"][r]
        pos_d = ((h_e + r_e - p_e) ** 2).sum()
        neg_d = ((h_e + r_e - n_e) ** 2).sum()
        losses.append(torch.log(1.0 + torch.exp(pos_d - neg_d)))
        hs.append(h_e)
        rs.append(r_e)
        ps.append(p_e)
        ns.append(n_e)
    norms = sum(torch.sqrt((torch.stack(rows) ** 2).sum()) for rows in (hs, rs, ps, ns))
    return {"kg": torch.stack(losses).mean(), "kg_reg": reg_weight * norms / len(losses)}
