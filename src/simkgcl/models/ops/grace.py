"""GRACE's symmetric contrastive loss between two views of the same rows (cosine, temperature
``tau``), with the other rows of *both* views as negatives (Zhu et al., 2020; KGCL's
``Contrast.grace_loss``)::

    l(a, b)_i = -log( e(a_i, b_i) / ( sum_{j != i} e(a_i, a_j) + sum_j e(a_i, b_j) ) )
    L = sum_i (l(a, b)_i + l(b, a)_i) / 2,        e(x, y) = exp(cos(x, y) / tau)

i.e. InfoNCE (:mod:`~.info_nce`) whose denominator also holds the intra-view pairs (the row's
own pair with itself left out). Summed over rows, not averaged. Rows are L2-normalised first
(``x / max(|x|, 1e-12)``, as ``F.normalize``), so every logit lies in ``[-1/tau, 1/tau]``.

One autograd function: with ``E_ab = exp(a b^T / tau)``, ``E_aa``, ``E_bb`` (diagonals zeroed)
and the denominators ``r_a = E_aa 1 + E_ab 1``, ``r_b = E_bb 1 + E_ab^T 1``::

    L = (sum log r_a + sum log r_b) / 2 - tr(a b^T) / tau
    dL/da = ( (E_aa a / r_a + E_aa (a / r_a) + E_ab b / r_a + E_ab (b / r_b)) / 2 - b ) / tau

(and symmetrically for ``b``), so no ``n x 2n`` concatenation and no ``logsumexp`` backward:
three ``n x n`` buffers, three products forward and four backward. For ``tau > 1/80`` the
exponentials neither overflow nor underflow in float32; below that the loss is computed with
``logsumexp`` through autograd instead (the same value).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.precision import to_at_least_float32

_MAX_INV_TAU = 80.0  # exp(80) ~ 5.5e34 < float32's largest; exp(-80) ~ 1.8e-35 > its smallest


def grace_loss(view1: Tensor, view2: Tensor, tau: float) -> Tensor:
    """Sum over rows of the symmetric loss of the module docstring (at least float32)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = l2_normalize_rows(to_at_least_float32(view1))
        b = l2_normalize_rows(view2.to(a.dtype))
        if 1.0 / tau >= _MAX_INV_TAU:
            return _grace_logsumexp(a, b, 1.0 / tau)
        return _Grace.apply(a, b, tau)


def _grace_logsumexp(a: Tensor, b: Tensor, inv_tau: float) -> Tensor:
    """The same loss written with ``logsumexp`` (stable for any temperature)."""
    between = torch.mm(a * inv_tau, b.t())
    self_pairs = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    within_a = torch.mm(a * inv_tau, a.t()).masked_fill(self_pairs, float("-inf"))
    within_b = torch.mm(b * inv_tau, b.t()).masked_fill(self_pairs, float("-inf"))
    from_a = torch.logsumexp(torch.cat([within_a, between], dim=1), dim=1).sum()
    from_b = torch.logsumexp(torch.cat([within_b, between.t()], dim=1), dim=1).sum()
    return 0.5 * (from_a + from_b) - torch.diagonal(between).sum()


def _exp_within(x: Tensor, inv_tau: float) -> Tensor:
    """``exp(x x^T / tau)`` with a zero diagonal (computed in place)."""
    out = torch.mm(x * inv_tau, x.t()).exp_()
    return out.fill_diagonal_(0.0)


class _Grace(torch.autograd.Function):
    """The loss of the module docstring for already row-normalised ``a``, ``b``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, tau: float) -> Tensor:
        inv_tau = 1.0 / tau
        between = torch.mm(a * inv_tau, b.t())
        positive = torch.diagonal(between).sum()
        exp_ab = between.exp_()
        exp_aa = _exp_within(a, inv_tau)
        exp_bb = _exp_within(b, inv_tau)
        r_a = exp_aa.sum(dim=1, keepdim=True).add_(exp_ab.sum(dim=1, keepdim=True))
        r_b = exp_bb.sum(dim=1, keepdim=True).add_(exp_ab.sum(dim=0).unsqueeze(1))
        ctx.save_for_backward(a, b, exp_ab, exp_aa, exp_bb, r_a, r_b)
        ctx.inv_tau = inv_tau
        return 0.5 * (r_a.log().sum() + r_b.log().sum()) - positive

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b, exp_ab, exp_aa, exp_bb, r_a, r_b = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        d = a.shape[1]
        a_pair = torch.cat([a, a / r_a], dim=1)  # [a, a / r_a]
        b_pair = torch.cat([b, b / r_b], dim=1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            within = exp_aa @ a_pair
            across = exp_ab @ b_pair
            grad_a = (within[:, :d] + across[:, :d]).div_(r_a).add_(within[:, d:])
            grad_a = grad_a.add_(across[:, d:]).mul_(0.5).sub_(b).mul_(scale)
        if ctx.needs_input_grad[1]:
            within = exp_bb @ b_pair
            across = exp_ab.t() @ a_pair
            grad_b = (within[:, :d] + across[:, :d]).div_(r_b).add_(within[:, d:])
            grad_b = grad_b.add_(across[:, d:]).mul_(0.5).sub_(a).mul_(scale)
        return grad_a, grad_b, None
