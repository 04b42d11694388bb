"""k-nearest-neighbour cosine graphs over the rows of a table (MCCLK's item-item semantic graph).

For rows ``x_1 .. x_n`` with unit rows ``y_i = x_i / |x_i|`` and cosines ``s_ij = y_i . y_j``::

    N_k(i)  = the k columns j with the largest s_ij (i itself included: s_ii = 1)
    d_i     = sum_{j in N_k(i)} s_ij                       (row sums of the kNN matrix)
    A_ij    = d_i^-1/2 s_ij d_j^-1/2    for j in N_k(i), else 0

(RecBole's MCCLK ``build_adj``: a directed kNN matrix normalised by its row sums on both sides.)
The graph is a constant: nothing here is differentiated (RecBole detaches it too).

* :func:`knn_select` — ``N_k`` and the ``s_ij`` on it, computed ``block`` rows at a time: a
  ``block x n`` slab of cosines is made and reduced to its top k at once, so the ``n x n`` matrix
  is never held (9,366 entities on lastfm-kg: 0.35 GB dense; 38 MB per 1,024-row slab).
* :func:`normalized_knn_values` — ``A_ij`` from the ``s_ij`` of each row's neighbours.
* :func:`mixed_knn_graph` — ``S = sum_g w_g A(x_g)`` over the same rows, built only where a
  product ``S^L x`` read at its first ``t`` rows looks: row ``i`` of ``A`` needs ``N_k(i)`` and
  the sums ``d_j`` of its neighbours, so ``L = 1`` needs the top-k of the rows ``R = T u N(T)``
  (``T`` the first ``t`` rows), each further layer one more ring of neighbours. The other rows
  are left empty (zeros): the ``t`` rows of ``S^L x`` are those of the full product, bit for bit.
  MCCLK reads its semantic view at the items only (ml-100k: 1,682 of 34,712 entities).
* :func:`fixed_width_matmul` — ``y = A x`` for a matrix given as ``w`` (column, value) pairs per
  row (``index``, ``values``: ``n x w``), differentiable in ``x``: ``dL/dx = A^T dL/dy``. The
  pattern changes every step, so no ``SparsePattern`` is built for it (it sorts its transpose
  up front: 0.07 s for lastfm-kg's 187k entries on one thread, 0.7 s on two busy ones): the
  forward is a CSR product with row pointers ``0, w, 2w, ...`` (6 ms), the backward the
  transposed CSR product (50 ms; an ``index_add_`` of the scaled rows: 113 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.sparse import _consume_csr_beta_warning

KNN_BLOCK = 1024  # rows per slab of cosines


@torch.no_grad()
def knn_select(x: Tensor, k: int, block: int = KNN_BLOCK) -> tuple[Tensor, Tensor]:
    """(cosines ``n x k``, neighbour columns ``n x k`` int64), largest first, per row of ``x``."""
    selection = _LazyKnn(x, k, block)
    selection.ensure(torch.arange(selection.unit.shape[0], device=selection.unit.device))
    return selection.cosines, selection.index


class _LazyKnn:
    """Top-k cosines of a table's rows, computed for the rows asked for, once each."""

    def __init__(self, x: Tensor, k: int, block: int):
        if not 0 < k <= x.shape[0]:
            raise ValueError(f"k = {k} neighbours among {x.shape[0]} rows")
        self.unit = l2_normalize_rows(x.detach())
        self.unit_t = self.unit.t().contiguous()
        n = self.unit.shape[0]
        self.k, self.block = k, block
        self.cosines = self.unit.new_zeros(n, k)
        self.index = torch.zeros(n, k, dtype=torch.long, device=self.unit.device)
        self.done = torch.zeros(n, dtype=torch.bool, device=self.unit.device)

    def ensure(self, rows: Tensor) -> None:
        """Computes the rows of ``rows`` (distinct) not computed yet."""
        rows = rows[~self.done[rows]]
        for start in range(0, rows.shape[0], self.block):
            part = rows[start:start + self.block]
            cosines, index = torch.topk(self.unit.index_select(0, part) @ self.unit_t, self.k,
                                        dim=1)
            self.cosines[part], self.index[part] = cosines, index
        self.done[rows] = True

    def neighbours(self, rows: Tensor) -> Tensor:
        return torch.unique(self.index.index_select(0, rows))


@torch.no_grad()
def mixed_knn_graph(tables: Sequence[Tensor], weights: Sequence[float], k: int, n_targets: int,
                    layers: int = 1, block: int = KNN_BLOCK) -> tuple[Tensor, Tensor]:
    """``S = sum_g weights[g] A(tables[g])`` as (columns, values), ``k`` per table per row, on
    the rows that the first ``n_targets`` rows of ``S^layers x`` read; other rows are zeros."""
    if len(tables) != len(weights) or not tables:
        raise ValueError("one weight per table, at least one table")
    graphs = [_LazyKnn(x, k, block) for x in tables]
    n, device = tables[0].shape[0], graphs[0].unit.device
    needed = torch.zeros(n, dtype=torch.bool, device=device)
    frontier = torch.arange(min(n_targets, n), device=device)
    needed[frontier] = True
    for layer in range(layers):
        for graph in graphs:
            graph.ensure(frontier)
        if layer + 1 < layers:
            reached = torch.unique(torch.cat([g.neighbours(frontier) for g in graphs]))
            frontier = reached[~needed[reached]]
            needed[frontier] = True
    rows = needed.nonzero().squeeze(1)
    index = torch.zeros(n, k * len(graphs), dtype=torch.long, device=device)
    values = graphs[0].unit.new_zeros(n, k * len(graphs))
    for g, (graph, weight) in enumerate(zip(graphs, weights, strict=True)):
        graph.ensure(graph.neighbours(rows))  # their row sums d_j
        inv_sqrt = graph.cosines.sum(dim=1).pow(-0.5)
        columns = graph.index.index_select(0, rows)
        index[rows, g * k:(g + 1) * k] = columns
        values[rows, g * k:(g + 1) * k] = weight * (graph.cosines.index_select(0, rows)
                                                    * inv_sqrt[rows].unsqueeze(1)
                                                    * inv_sqrt[columns])
    return index, values


@torch.no_grad()
def normalized_knn_values(cosines: Tensor, index: Tensor) -> Tensor:
    """``A_ij = d_i^-1/2 s_ij d_j^-1/2`` at the neighbours (``d``: the rows' sums of ``s``)."""
    inv_sqrt = cosines.sum(dim=1).pow(-0.5)
    return cosines * inv_sqrt.unsqueeze(1) * inv_sqrt[index]


def fixed_width_matmul(index: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """``y_i = sum_k values[i, k] x[index[i, k]]`` (a constant matrix: no gradient for it)."""
    _consume_csr_beta_warning()
    return _FixedWidthMatmul.apply(index, values.detach().to(x.dtype), x)


class _FixedWidthMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, index: Tensor, values: Tensor, x: Tensor) -> Tensor:
        n, width = index.shape
        crow = torch.arange(0, n * width + 1, width, device=index.device)
        matrix = torch.sparse_csr_tensor(crow, index.reshape(-1), values.reshape(-1),
                                         (n, x.shape[0]), check_invariants=False)
        ctx.matrix = matrix
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, ctx.matrix.t() @ grad
