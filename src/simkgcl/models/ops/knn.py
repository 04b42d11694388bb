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
* :func:`fixed_width_matmul` — ``y = A x`` for a matrix given as ``w`` (column, value) pairs per
  row (``index``, ``values``: ``n x w``), differentiable in ``x``: ``dL/dx = A^T dL/dy``. The
  pattern changes every step, so no ``SparsePattern`` is built for it (it sorts its transpose
  up front: 0.07 s for lastfm-kg's 187k entries on one thread, 0.7 s on two busy ones): the
  forward is a CSR product with row pointers ``0, w, 2w, ...`` (6 ms), the backward the
  transposed CSR product (50 ms; an ``index_add_`` of the scaled rows: 113 ms).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.sparse import _consume_csr_beta_warning

KNN_BLOCK = 1024  # rows per slab of cosines


@torch.no_grad()
def knn_select(x: Tensor, k: int, block: int = KNN_BLOCK) -> tuple[Tensor, Tensor]:
    """(cosines ``n x k``, neighbour columns ``n x k`` int64), largest first, per row of ``x``."""
    if not 0 < k <= x.shape[0]:
        raise ValueError(f"k = {k} neighbours among {x.shape[0]} rows")
    unit = l2_normalize_rows(x.detach())
    n = unit.shape[0]
    values = unit.new_empty(n, k)
    index = torch.empty(n, k, dtype=torch.long, device=unit.device)
    unit_t = unit.t().contiguous()
    for start in range(0, n, block):
        stop = min(start + block, n)
        torch.topk(unit[start:stop] @ unit_t, k, dim=1, out=(values[start:stop], index[start:stop]))
    return values, index


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
