"""InfoNCE between two views of the same rows (cosine similarity, temperature ``tau``)::

    L = sum_i [ logsumexp_j (a_i . b_j / tau) - a_i . b_i / tau ]
    a_i = x_i / |x_i|,  b_j = y_j / |y_j|

i.e. for each row, -log of the softmax probability of its own row of the other view among all
rows (the other rows are the negatives). Summed over rows, not averaged.

One autograd function: one ``n x n`` buffer holds the logits, then (in place) their exponentials
``E``; the row sums ``s`` give the loss and the gradients ``(E b / s - b) / tau`` and
``(E.T (a / s) - a) / tau``, so the softmax is never divided out over ``n x n`` and there is no
``logsumexp`` backward. The logits of unit rows lie in ``[-1/tau, 1/tau]``: for ``tau > 1/80``
their exponentials neither overflow nor underflow in float32 and no max is subtracted; otherwise
the row max is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.precision import to_at_least_float32


def info_nce(view1: Tensor, view2: Tensor, tau: float) -> Tensor:
    """Sum over rows of -log softmax of the matching row among all rows (cosine / tau)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = l2_normalize_rows(to_at_least_float32(view1))
        b = l2_normalize_rows(view2.to(a.dtype))
        return _InfoNCE.apply(a, b, tau)


class _InfoNCE(torch.autograd.Function):
    """The loss of the module docstring for already row-normalised ``a``, ``b``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, tau: float) -> Tensor:
        inv_tau = 1.0 / tau
        logits = torch.mm(a * inv_tau, b.t())
        positive = torch.diagonal(logits).sum()
        shift = None
        if inv_tau >= 80.0:
            shift = logits.amax(dim=1, keepdim=True)
            logits.sub_(shift)
        exps = logits.exp_()
        totals = exps.sum(dim=1, keepdim=True)
        lse = totals.log().sum()
        if shift is not None:
            lse = lse + shift.sum()
        ctx.save_for_backward(a, b, exps, totals)
        ctx.inv_tau = inv_tau
        return lse - positive

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b, exps, totals = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (exps @ b).div_(totals).sub_(b).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_b = (exps.t() @ (a / totals)).sub_(a).mul_(scale)
        return grad_a, grad_b, None
