"""Relation-aware attention logits of KG triples (SimKGCL; MCCLK's ``calculate_sim_hrt``)::

    z_(h,r,t) = |x_h * w_r|^2 |x_t * w_r|^2        (= (|x_h * w_r| |x_t * w_r|)^2)

for a node table ``x`` and relation rows ``w`` (``*`` elementwise). Squared norms are multiplied
directly: the square root of the written form has an infinite gradient at a zero row.

Never expanded to ``triples x d``: since ``|x_e * w_r|^2 = (x_e * x_e) . (w_r * w_r)``, one
``entity rows x relation rows`` product gives every factor, gathered as one scalar per triple.
The gradient of that product is non-zero only at the ``2 x triples`` (row, relation) entries
used, so the backward is two sparse products on a fixed pattern ``G`` (``2 x (G @ (w * w))``
and ``2 w * (G.T @ (x * x))``) instead of two dense ones. The relation columns are padded with
zeros to a multiple of 8: GEMMs with an odd width run at two thirds of the speed on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simkgcl.models.ops.sparse import SparsePattern


class TripleFactors(nn.Module):
    """Where each triple's two factors sit in one node-table layout (index tensors only).

    ``head_rows``, ``tail_rows``: rows of the entity part of the table (which starts at row
    ``row_offset``, after e.g. the user rows), in the triples' order; ``relations``: their
    relation ids. Buffers move with ``.to(device)``:

    * ``head_index``, ``tail_index``: flat positions in the ``entity rows x n_cols`` factor
      product (``n_cols`` = relation rows padded to a multiple of 8);
    * ``grad_pattern`` (table rows x relation rows) and ``grad_order``: the pattern ``G`` of
      the backward, and the map from ``[head factors; tail factors]`` to its row-sorted entries.
    """

    head_index: Tensor
    tail_index: Tensor
    grad_order: Tensor

    def __init__(
        self,
        head_rows: Tensor,
        tail_rows: Tensor,
        relations: Tensor,
        n_entity_rows: int,
        n_relation_rows: int,
        row_offset: int,
    ):
        super().__init__()
        self.row_offset = int(row_offset)
        self.n_cols = -(-int(n_relation_rows) // 8) * 8
        self.register_buffer("head_index", head_rows * self.n_cols + relations, persistent=False)
        self.register_buffer("tail_index", tail_rows * self.n_cols + relations, persistent=False)
        factor_rows = self.row_offset + torch.cat([head_rows, tail_rows])
        order = torch.sort(factor_rows, stable=True).indices
        self.grad_pattern = SparsePattern(
            factor_rows[order],
            torch.cat([relations, relations])[order],
            (self.row_offset + int(n_entity_rows), int(n_relation_rows)),
        )
        self.register_buffer(
            "grad_order", order.to(self.grad_pattern.col.dtype), persistent=False
        )


def attention_logits(table: Tensor, relations: Tensor, factors: TripleFactors) -> Tensor:
    """``z`` of the module docstring for every triple of ``factors`` (differentiable in both).

    ``table``: the node table (rows ``factors.row_offset`` on are entities); ``relations``: the
    relation table ``w``.
    """
    return _AttentionLogits.apply(
        table,
        relations,
        factors.head_index,
        factors.tail_index,
        factors.grad_pattern,
        factors.grad_order,
        factors.n_cols,
        factors.row_offset,
    )


class _AttentionLogits(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        table: Tensor,
        relations: Tensor,
        head_index: Tensor,
        tail_index: Tensor,
        grad_pattern: SparsePattern,
        grad_order: Tensor,
        n_cols: int,
        row_offset: int,
    ) -> Tensor:
        sq_relations = relations * relations
        padded = sq_relations.new_zeros(n_cols, sq_relations.shape[1])
        padded[: sq_relations.shape[0]] = sq_relations
        sq_table = table * table  # kept for the backward (the rows before the entities are few)
        sq_norms = torch.mm(sq_table[row_offset:], padded.t()).reshape(-1)
        head_sq = sq_norms.index_select(0, head_index)
        tail_sq = sq_norms.index_select(0, tail_index)
        ctx.save_for_backward(table, relations, sq_relations, sq_table, head_sq, tail_sq)
        ctx.grad_pattern = grad_pattern
        ctx.grad_order = grad_order
        return head_sq * tail_sq

    @staticmethod
    def backward(ctx, grad: Tensor):
        table, relations, sq_relations, sq_table, head_sq, tail_sq = ctx.saved_tensors
        pattern: SparsePattern = ctx.grad_pattern
        # d z / d (head factor) = tail factor and vice versa, in the pattern's entry order;
        # the 2 of d(x * x) = 2 x dx is folded into these per-triple values
        grad2 = grad * 2.0
        values = torch.cat([grad2 * tail_sq, grad2 * head_sq]).index_select(0, ctx.grad_order)
        grad_table = grad_relations = None
        if ctx.needs_input_grad[0]:
            grad_table = pattern.product(values, sq_relations).mul_(table)
        if ctx.needs_input_grad[1]:
            grad_relations = pattern.t_product(values, sq_table).mul_(relations)
        return grad_table, grad_relations, None, None, None, None, None, None
