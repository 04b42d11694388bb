"""Relation-attentive aggregation of KG neighbours, with interaction rows in the same products.

For a node table ``x``, relation rows ``w``, one weight ``a`` per triple (attention weights from
:func:`~simkgcl.models.ops.segment.segment_softmax`, or ``1 / deg(h)`` for KGIN's plain mean)
and ``P`` prefix rows (users) with sparse weights ``v`` over the table (the normalised
interactions)::

    out_h = sum_{(h, r, t)} a_(h,r,t) (x_t * w_r)        head rows
    out_u = s_u * sum_j v_(u,j) x_j                      prefix rows

where ``s_u`` is a per-user scale, e.g. :func:`user_relation_scale` ``1 + softmax(u W^T) W``
(SimKGCL, MCCLK) or :func:`intent_scale` ``1 + softmax(u L^T) (softmax(A) W)`` over KGIN's
intents (both :func:`user_attention_scale` ``1 + softmax(u K^T) V``).

Computed as three products on fixed structures, never a ``triples x d`` tensor: ``G`` (rows:
the prefix rows, then the distinct (head, relation) pairs) gathers ``sum_j v_(u,j) x_j`` and,
per pair, ``sum_t a_(h,r,t) x_t`` (its entries are ``[v; a]``, differentiable); the rows are
scaled (prefix rows by ``s``, a pair by its ``w_r``); ``H`` sums the pair rows of each head.
``G @ x`` is the caller's :meth:`~simkgcl.models.ops.sparse.SparsePattern.matmul` (so the
user scale may be computed in between); :func:`relational_aggregate` does the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.sparse import SparsePattern


def user_attention_scale(
    user_rows: Tensor, keys: Tensor, values: Tensor, softmax: bool = True
) -> Tensor:
    """``1 + softmax(u K^T) V`` per user row (``1 + (u K^T) V`` without ``softmax``)."""
    affinity = user_rows @ keys.t()
    if softmax:
        affinity = torch.softmax(affinity, dim=-1)
    return (affinity @ values).add_(1.0)


def user_relation_scale(user_rows: Tensor, relations: Tensor, softmax: bool = True) -> Tensor:
    """``1 + softmax(u W^T) W`` per user row (``1 + (u W^T) W`` without ``softmax``)."""
    return user_attention_scale(user_rows, relations, relations, softmax)


def intent_scale(user_rows: Tensor, intents: Tensor, intent_relations: Tensor) -> Tensor:
    """KGIN's ``1 + softmax(u L^T) (softmax(A) W)`` per user row.

    ``intents``: the intent embeddings ``L`` (one row per intent); ``intent_relations``: each
    intent as a mix of relation rows, ``softmax(A, dim=1) W`` (computed once per forward).
    """
    return user_attention_scale(user_rows, intents, intent_relations)


def relational_aggregate(
    gathered: Tensor,
    prefix_scale: Tensor,
    relations: Tensor,
    pair_relations: Tensor,
    pair_rels: Tensor,
    aggregate: SparsePattern,
    aggregate_values: Tensor,
) -> Tensor:
    """``H @ ([prefix rows * s; pair rows * w_r])``: new ``[prefix rows; head rows]``.

    ``gathered``: ``G @ x`` (``[prefix rows; pair rows]``); ``prefix_scale``: ``s``;
    ``relations``: ``W`` (receives the gradient of every pair's ``w_r``); ``pair_relations``: a
    constant copy of ``W[pair_rels]`` (``relations.detach().index_select(0, pair_rels)``, made
    once per forward and shared by its layers); ``aggregate``: ``H`` with values
    ``aggregate_values`` (ones).
    """
    scaled = _ScaleRows.apply(gathered, prefix_scale, relations, pair_relations, pair_rels)
    return aggregate.matmul(aggregate_values, scaled)


class _ScaleRows(torch.autograd.Function):
    """``[prefix rows; pair rows] * [prefix_scale; W[pair rels]]`` without materialising the
    scales: no ``(P + pairs) x d`` cat and no per-layer ``(pairs x d)`` gradient copy to sum over
    the layers; the gradient of ``W`` is gathered per relation with one ``index_add_``."""

    @staticmethod
    def forward(
        ctx,
        rows: Tensor,
        prefix_scale: Tensor,
        relations: Tensor,
        pair_relations: Tensor,
        pair_rels: Tensor,
    ) -> Tensor:
        n_prefix = prefix_scale.shape[0]
        out = torch.empty_like(rows)
        torch.mul(rows[:n_prefix], prefix_scale, out=out[:n_prefix])
        torch.mul(rows[n_prefix:], pair_relations, out=out[n_prefix:])
        ctx.save_for_backward(rows, prefix_scale, pair_relations, pair_rels)
        ctx.n_relations = relations.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, prefix_scale, pair_relations, pair_rels = ctx.saved_tensors
        n_prefix = prefix_scale.shape[0]
        grad_prefix = grad_relations = None
        if ctx.needs_input_grad[1]:
            grad_prefix = grad[:n_prefix] * rows[:n_prefix]
        if ctx.needs_input_grad[2]:
            per_pair = grad[n_prefix:] * rows[n_prefix:]
            grad_relations = grad.new_zeros(ctx.n_relations, grad.shape[1])
            grad_relations.index_add_(0, pair_rels, per_pair)
        grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_rows = torch.empty_like(grad)
            torch.mul(grad[:n_prefix], prefix_scale, out=grad_rows[:n_prefix])
            torch.mul(grad[n_prefix:], pair_relations, out=grad_rows[n_prefix:])
        return grad_rows, grad_prefix, grad_relations, None, None
