"""Graph utilities shared by the models, in plain PyTorch (no torch_scatter / PyG / dgl).

Two building blocks:

* :class:`SparsePattern` — the structure of a sparse matrix in CSR form (rows sorted), together
  with the structure of its transpose, built once and reused for every batch. Its ``matmul``
  multiplies ``pattern(values) @ dense`` and differentiates with respect to **both** the dense
  input and the per-entry ``values`` (through a sampled dense-dense product), which is what lets
  attention weights live on the sparse entries instead of on an expanded ``nnz x d`` tensor.
  Measured on this machine (2 cores, 686k entries, d = 64): CSR spmm 0.05 s and the sampled
  product 0.05 s, against 0.6-1.1 s for the gather + ``index_add_`` formulation.
* segment operations (softmax, counts) over one scalar per entry, grouped by an integer key,
  written with ``scatter_reduce`` / ``index_add_``.

Normalised interaction graphs follow the LightGCN recipe: ``D^-1/2 A D^-1/2`` with degrees
``+ 1e-7`` and duplicate (user, item) pairs collapsed to one edge.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from simkgcl.models.base import GraphData

# CSR support is marked "beta" by PyTorch; the operations used here are stable on CPU and CUDA.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

DEGREE_EPS = 1e-7


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class SparsePattern(nn.Module):
    """Structure of a sparse ``n_rows x n_cols`` matrix (CSR) and of its transpose.

    Entries are given in row-sorted order (``rows`` non-decreasing); the caller keeps its
    per-entry data in that same order. Tensors are non-persistent buffers, so ``.to(device)``
    moves them with the model and checkpoints do not store them.
    """

    crow: Tensor
    col: Tensor
    row: Tensor
    t_crow: Tensor
    t_col: Tensor
    t_perm: Tensor

    def __init__(self, rows: Tensor, cols: Tensor, shape: tuple[int, int]):
        super().__init__()
        rows = rows.long()
        cols = cols.long()
        if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):
            raise ValueError("SparsePattern needs entries sorted by row")
        self.shape = (int(shape[0]), int(shape[1]))
        self.nnz = int(rows.numel())
        self.register_buffer("crow", _indptr(rows, self.shape[0]), persistent=False)
        self.register_buffer("col", cols.contiguous(), persistent=False)
        self.register_buffer("row", rows.contiguous(), persistent=False)
        # Transpose: entries ordered by column (stable, so rows stay sorted inside a column).
        t_perm = torch.sort(cols, stable=True).indices
        self.register_buffer("t_crow", _indptr(cols[t_perm], self.shape[1]), persistent=False)
        self.register_buffer("t_col", rows[t_perm].contiguous(), persistent=False)
        self.register_buffer("t_perm", t_perm, persistent=False)

    def matmul(self, values: Tensor, dense: Tensor) -> Tensor:
        """``M @ dense`` where ``M`` has this structure and entries ``values``."""
        return _PatternMatmul.apply(values, dense, self, False)

    def t_matmul(self, values: Tensor, dense: Tensor) -> Tensor:
        """``M.T @ dense`` (``values`` in this pattern's row-sorted order)."""
        return _PatternMatmul.apply(values, dense, self, True)

    def to_dense(self, values: Tensor) -> Tensor:
        """Dense copy (tests and debugging only)."""
        out = torch.zeros(self.shape, dtype=values.dtype, device=values.device)
        return out.index_put_((self.row, self.col), values, accumulate=True)


def _indptr(sorted_keys: Tensor, n: int) -> Tensor:
    counts = torch.bincount(sorted_keys, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.long, device=sorted_keys.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr


class _PatternMatmul(torch.autograd.Function):
    """``(M or M.T) @ dense`` with gradients for the entries of ``M`` and for ``dense``.

    The entry gradient of ``out = M @ X`` is ``dL/dM_ij = <dL/dout_i, X_j>`` on the pattern only:
    a sampled dense-dense product (``torch.sparse.sampled_addmm``), never an ``nnz x d`` tensor.
    Runs in float32 (or float64) even under CUDA autocast.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, values: Tensor, dense: Tensor, pattern: SparsePattern, transpose: bool):
        values = values.to(dense.dtype)
        ctx.save_for_backward(values, dense)
        ctx.pattern = pattern
        ctx.transpose = transpose
        return _apply(pattern, values, dense, transpose)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: Tensor):
        values, dense = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_out = grad_out.contiguous()
        grad_values = grad_dense = None
        if ctx.needs_input_grad[1]:
            grad_dense = _apply(pattern, values, grad_out, not ctx.transpose)
        if ctx.needs_input_grad[0]:
            # d out_i / d M_ij = X_j (forward) or d out_j / d M_ij = X_i (transposed forward).
            left, right = (dense, grad_out) if ctx.transpose else (grad_out, dense)
            sample = _csr(pattern.crow, pattern.col, values, pattern.shape)
            grad_values = torch.sparse.sampled_addmm(
                sample, left.contiguous(), right.t(), beta=0.0
            ).values()
        return grad_values, grad_dense, None, None


def _apply(pattern: SparsePattern, values: Tensor, dense: Tensor, transpose: bool) -> Tensor:
    if transpose:
        n_rows, n_cols = pattern.shape
        matrix = _csr(pattern.t_crow, pattern.t_col, values[pattern.t_perm], (n_cols, n_rows))
    else:
        matrix = _csr(pattern.crow, pattern.col, values, pattern.shape)
    return matrix @ dense


# --------------------------------------------------------------------------- interaction graph


def unique_interactions(graph: GraphData) -> tuple[Tensor, Tensor]:
    """Distinct (user, item) training pairs sorted by user then item (duplicates collapse)."""
    keys = graph.train_users.long() * graph.n_items + graph.train_items.long()
    keys = torch.unique(keys)
    return keys // graph.n_items, keys % graph.n_items


def _inv_sqrt_degree(ids: Tensor, n: int) -> Tensor:
    degree = torch.bincount(ids, minlength=n).double() + DEGREE_EPS
    return degree.pow(-0.5)


def normalized_user_item(graph: GraphData) -> tuple[SparsePattern, Tensor]:
    """``UI`` = user->item block of ``D^-1/2 A D^-1/2``: pattern (U x I) and float32 values.

    ``A`` is the symmetric bipartite adjacency over users and items, so the block's entry for
    (u, i) is ``(deg_u + 1e-7)^-1/2 (deg_i + 1e-7)^-1/2``; ``UI.T`` is the item->user block.
    """
    users, items = unique_interactions(graph)
    values = (
        _inv_sqrt_degree(users, graph.n_users)[users]
        * _inv_sqrt_degree(items, graph.n_items)[items]
    )
    pattern = SparsePattern(users, items, (graph.n_users, graph.n_items))
    return pattern, values.float()


def normalized_adjacency(graph: GraphData) -> tuple[SparsePattern, Tensor]:
    """Full ``(U + I) x (U + I)`` matrix ``D^-1/2 A D^-1/2`` (users first, then items)."""
    users, items = unique_interactions(graph)
    n_users = graph.n_users
    weight = _inv_sqrt_degree(users, n_users)[users] * _inv_sqrt_degree(items, graph.n_items)[items]
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    n = n_users + graph.n_items
    order = torch.argsort(rows * n + cols)
    pattern = SparsePattern(rows[order], cols[order], (n, n))
    return pattern, torch.cat([weight, weight])[order].float()


# --------------------------------------------------------------------------- segment operations


def segment_count(segment_ids: Tensor, n_segments: int, mask: Tensor | None = None) -> Tensor:
    """Number of (kept) entries per segment (int64)."""
    if mask is None:
        return torch.bincount(segment_ids, minlength=n_segments)
    return torch.bincount(segment_ids[mask], minlength=n_segments)


def segment_softmax(
    logits: Tensor, segment_ids: Tensor, n_segments: int, mask: Tensor | None = None
) -> Tensor:
    """Softmax of one scalar per entry over the entries sharing a segment id.

    Gathers use ``index_select`` (its backward is ``index_add_``), far faster on CPU than
    ``tensor[index]`` whose backward is an accumulating ``index_put_``.

    Entries where ``mask`` is False take no part (weight exactly 0, no gradient). The per-segment
    maximum is subtracted for stability and detached (softmax does not depend on it).
    """
    fill = torch.finfo(logits.dtype).min
    masked = logits if mask is None else torch.where(mask, logits, torch.full_like(logits, fill))
    seg_max = torch.full((n_segments,), fill, dtype=logits.dtype, device=logits.device)
    seg_max = seg_max.scatter_reduce(0, segment_ids, masked.detach(), "amax", include_self=True)
    shifted = logits - seg_max.index_select(0, segment_ids)
    if mask is not None:
        shifted = torch.where(mask, shifted, torch.zeros_like(shifted))
    weights = torch.exp(shifted)
    if mask is not None:
        weights = weights * mask.to(weights.dtype)
    totals = torch.zeros(n_segments, dtype=weights.dtype, device=weights.device)
    totals = totals.index_add(0, segment_ids, weights)
    totals = totals.clamp_min(torch.finfo(weights.dtype).tiny)
    return weights / totals.index_select(0, segment_ids)


def segment_mean(
    values: Tensor, segment_ids: Tensor, n_segments: int, mask: Tensor | None = None
) -> Tensor:
    """Mean of rows of ``values`` per segment (zero for an empty segment)."""
    if mask is not None:
        values = values * mask.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
    out = torch.zeros((n_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    out = out.index_add(0, segment_ids, values)
    count = segment_count(segment_ids, n_segments, mask).clamp_min(1).to(values.dtype)
    return out / count.view(-1, *([1] * (values.dim() - 1)))
