"""Translation-based KG scores: TransE's BPR loss (KGCL) and TransR's projections, distances
and attention logits (KGAT).

TransE, as KGCL's ``calc_kg_loss_transE`` computes it (:func:`transe_bpr_loss`)::

    f(h, r, t) = |e_h + e_r - e_t|^2
    L = mean_b -log sigmoid( f(h, r, t-) - f(h, r, t+) )
        + reg_weight * sum_{x in (e_h, e_r, e_t+, e_t-)} mean_b |x_b|^2 / 2

for a batch of heads ``h``, relations ``r``, true tails ``t+`` and corrupted tails ``t-`` (the
rows are given already gathered: the caller decides which tables hold heads and tails).

TransR (KGAT): every relation ``r`` has a vector ``e_r`` (k) and a projection ``W_r`` (d x k,
stored as a row of ``d * k`` numbers, row-major: ``W_r[a, b]`` at ``a * k + b``); an entity row
``x`` (d) is seen in the relation's space as ``x W_r`` (k):

* :func:`transr_project` — ``x_b W_{r_b}`` for a batch of rows, each with its own relation
  (one product per relation present);
* :func:`translation_distance` — ``|h + e_r - t|^2`` per row (of projected rows);
* :func:`transr_attention_logits` — KGAT's knowledge-aware attention before its softmax, for
  every edge ``(h, r, t)`` of a graph::

      pi(h, r, t) = (x_t W_r) . tanh(x_h W_r + e_r)

  computed per relation: the distinct nodes of the relation's edges are projected once
  (one ``nodes x d @ d x k`` product per relation, never an ``edges x d x k`` tensor), then
  gathered per edge (:class:`RelationGroups` holds that grouping).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def transe_bpr_loss(
    heads: Tensor, relations: Tensor, pos_tails: Tensor, neg_tails: Tensor, reg_weight: float
) -> Tensor:
    """The batch loss of the module docstring for row-aligned ``(B, d)`` embeddings."""
    translated = heads + relations
    pos = (translated - pos_tails).pow(2).sum(dim=1)
    neg = (translated - neg_tails).pow(2).sum(dim=1)
    loss = -F.logsigmoid(neg - pos).mean()
    l2 = sum(x.pow(2).sum(dim=1).mean() / 2.0 for x in (heads, relations, pos_tails, neg_tails))
    return loss + reg_weight * l2


def transr_project(rows: Tensor, relations: Tensor, projections: Tensor) -> Tensor:
    """``x_b W_{r_b}`` for ``rows`` (..., B, d) whose leading slices share the ``relations``
    (B,); ``projections``: the relation table (C, d * k). Returns (..., B, k).

    One ``(n_r, d) @ (d, k)`` product per relation present, on the rows sorted by relation:
    8x faster (forward + backward, B = 2048, d = k = 64, 60 relations) than gathering a
    ``d x k`` matrix per row for a batched product, whose backward scatters ``B x d x k``.
    """
    dim = rows.shape[-1]
    order = torch.sort(relations, stable=True).indices
    present, counts = torch.unique_consecutive(relations.index_select(0, order),
                                               return_counts=True)
    matrices = projections.index_select(0, present).view(present.numel(), dim, -1).unbind(0)
    chunks = rows.index_select(-2, order).split(counts.tolist(), dim=-2)
    grouped = torch.cat([chunk @ matrix for chunk, matrix in zip(chunks, matrices, strict=True)],
                        dim=-2)
    return grouped.index_select(-2, torch.argsort(order))


def translation_distance(heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
    """``|h + e_r - t|^2`` per row."""
    return (heads + relations - tails).pow(2).sum(dim=1)


class RelationGroups(nn.Module):
    """A graph's edges grouped by relation, for :func:`transr_attention_logits`.

    From edges ``(heads, relations, tails)`` (node ids). Group ``g`` (relation
    ``group_relations[g]``) owns the nodes ``nodes[node_bounds[g]:node_bounds[g+1]]`` (the
    distinct heads and tails of its edges) and the edges ``edge_bounds[g]:edge_bounds[g+1]``
    of the grouped order; ``edge_order`` maps grouped positions to the edges' given order and
    ``head_pos``/``tail_pos`` are the grouped edges' positions among their group's nodes.
    Index tensors are non-persistent buffers (they move with ``.to(device)``).
    """

    nodes: Tensor
    head_pos: Tensor
    tail_pos: Tensor
    edge_order: Tensor

    def __init__(self, heads: Tensor, relations: Tensor, tails: Tensor):
        super().__init__()
        heads, relations, tails = heads.long(), relations.long(), tails.long()
        order = torch.sort(relations, stable=True).indices
        rels = relations[order]
        present, counts = torch.unique_consecutive(rels, return_counts=True)
        self.group_relations = [int(r) for r in present]
        self.edge_bounds = [0, *torch.cumsum(counts, 0).tolist()]
        nodes, head_pos, tail_pos, node_bounds = [], [], [], [0]
        for g in range(len(self.group_relations)):
            edges = order[self.edge_bounds[g] : self.edge_bounds[g + 1]]
            group_nodes = torch.unique(torch.cat([heads[edges], tails[edges]]))
            nodes.append(group_nodes)
            head_pos.append(torch.searchsorted(group_nodes, heads[edges]))
            tail_pos.append(torch.searchsorted(group_nodes, tails[edges]))
            node_bounds.append(node_bounds[-1] + int(group_nodes.numel()))
        self.node_bounds = node_bounds
        empty = torch.zeros(0, dtype=torch.long)
        self.register_buffer("nodes", torch.cat(nodes) if nodes else empty, persistent=False)
        self.register_buffer("head_pos", torch.cat(head_pos) if nodes else empty,
                             persistent=False)
        self.register_buffer("tail_pos", torch.cat(tail_pos) if nodes else empty,
                             persistent=False)
        self.register_buffer("edge_order", order, persistent=False)


def transr_attention_logits(
    table: Tensor, relations: Tensor, projections: Tensor, groups: RelationGroups
) -> Tensor:
    """``pi(h, r, t)`` of the module docstring for every edge of ``groups``, in the grouped
    order (``groups.edge_order[j]`` is the given edge of entry ``j``).

    ``table``: node rows (d); ``relations``: relation vectors (k); ``projections``: one
    ``d * k`` row per relation.
    """
    dim = table.shape[1]
    out = []
    for g, relation in enumerate(groups.group_relations):
        lo, hi = groups.node_bounds[g], groups.node_bounds[g + 1]
        matrix = projections[relation].view(dim, -1)
        projected = table.index_select(0, groups.nodes[lo:hi]) @ matrix
        e_lo, e_hi = groups.edge_bounds[g], groups.edge_bounds[g + 1]
        heads = projected.index_select(0, groups.head_pos[e_lo:e_hi])
        tails = projected.index_select(0, groups.tail_pos[e_lo:e_hi])
        out.append((tails * torch.tanh(heads + relations[relation])).sum(dim=1))
    if not out:
        return table.new_zeros(0)
    return torch.cat(out)
