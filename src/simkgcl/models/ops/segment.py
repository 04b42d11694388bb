"""Weights of one scalar per entry over the entries that share a segment (e.g. a head entity):
a softmax (:func:`segment_softmax`) or a plain mean (:func:`segment_mean_weights`).

For entries ``k`` with segment ``s(k)``, kept entries ``K`` (all, without a mask)::

    w_k = exp(z_k) / sum_{j in K, s(j) = s(k)} exp(z_j)            for k in K, else 0
    w_k = w_k / |{j in K : s(j) = s(k)}|                           with ``mean``

(``mean``: the weights of a mean of softmax-weighted values, folded into the same division.)
Written with ``scatter_reduce`` / ``index_add_``; one autograd node whose backward is
``w * (g - c * sum_segment(g * w))`` (``c`` = the count with ``mean``, else 1): three passes
instead of one per forward operation.

:func:`segment_mean_weights`: ``1 / |{j in K : s(j) = s(k)}|`` for kept entries, 0 for the
others — the weights of a mean over a segment's kept entries (``scatter_mean`` as a weighted
sum, e.g. KGIN's mean over a head's sampled triples).
"""

from __future__ import annotations

import torch
from torch import Tensor


def segment_softmax(
    logits: Tensor,
    segment_ids: Tensor,
    n_segments: int,
    mask: Tensor | None = None,
    *,
    mean: bool = False,
) -> Tensor:
    """Softmax of ``logits`` within each segment (see the module docstring).

    Entries where ``mask`` is False take no part (weight exactly 0, no gradient). The per-segment
    maximum is subtracted for stability (softmax does not depend on it).
    """
    return _SegmentSoftmax.apply(logits, segment_ids, n_segments, mask, mean)


class _SegmentSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: Tensor,
        segment_ids: Tensor,
        n_segments: int,
        mask: Tensor | None,
        mean: bool,
    ) -> Tensor:
        fill = torch.finfo(logits.dtype).min
        kept = None if mask is None else mask.to(logits.dtype)
        masked = logits if mask is None else logits.masked_fill(~mask, fill)
        seg_max = torch.full((n_segments,), fill, dtype=logits.dtype, device=logits.device)
        seg_max = seg_max.scatter_reduce(0, segment_ids, masked, "amax", include_self=True)
        # a dropped entry: fill - max underflows exp to 0; in a fully dropped segment the mask
        # multiplication zeroes it
        weights = (masked - seg_max.index_select(0, segment_ids)).exp_()
        if kept is not None:
            weights = weights.mul_(kept)
        totals = torch.zeros(n_segments, dtype=weights.dtype, device=weights.device)
        totals = totals.index_add_(0, segment_ids, weights)
        counts = None
        if mean:
            counts = torch.zeros_like(totals).index_add_(
                0, segment_ids, torch.ones_like(weights) if kept is None else kept
            )
            totals = totals * counts
        totals = totals.clamp_min_(torch.finfo(weights.dtype).tiny)
        weights = weights.div_(totals.index_select(0, segment_ids))
        ctx.save_for_backward(weights, segment_ids, counts)
        ctx.n_segments = n_segments
        return weights

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, segment_ids, counts = ctx.saved_tensors
        along = torch.zeros(ctx.n_segments, dtype=grad.dtype, device=grad.device)
        along = along.index_add_(0, segment_ids, grad * weights)
        if counts is not None:
            along = along.mul_(counts)
        return (grad - along.index_select(0, segment_ids)).mul_(weights), None, None, None, None


def segment_mean_weights(
    segment_ids: Tensor,
    n_segments: int,
    mask: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Weight of each entry in the mean over the kept entries of its segment (a constant: no
    gradient). ``mask``: entries kept (all without it); a dropped entry weighs 0."""
    if mask is None:
        kept = torch.ones(segment_ids.shape[0], dtype=dtype, device=segment_ids.device)
    else:
        kept = mask.to(dtype, copy=True)
    counts = torch.zeros(n_segments, dtype=dtype, device=segment_ids.device)
    counts = counts.index_add_(0, segment_ids, kept).clamp_min_(1.0)
    return kept.div_(counts.index_select(0, segment_ids))
