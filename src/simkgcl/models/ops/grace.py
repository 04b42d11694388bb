"""GRACE's symmetric contrastive loss between two views of the same rows (cosine, temperature
``tau``), with the other rows of *both* views as negatives (Zhu et al., 2020; KGCL's
``Contrast.grace_loss``)::

    l(a, b)_i = -log( e(a_i, b_i) / ( sum_{j != i} e(a_i, a_j) + sum_j e(a_i, b_j) ) )
    L = sum_i (l(a, b)_i + l(b, a)_i) / 2,        e(x, y) = exp(cos(x, y) / tau)

i.e. InfoNCE (:mod:`~.info_nce`) whose denominator also holds the intra-view pairs (the row's
own pair with itself left out). ``symmetric=False`` gives the one-way sum ``sum_i l(a, b)_i``
(MCCLK's local-level loss).

Counted form (MCCLK: a batch's items and users repeat): distinct rows ``a_q, b_q`` standing for
``c_q`` identical rows each give the same loss with ``n_distinct^2`` instead of ``n^2`` work. With
full ``E_xy = exp(x y^T / tau)`` (diagonals kept), ``r_a = E_aa c - diag(E_aa) + E_ab c``,
``r_b = E_bb c - diag(E_bb) + E_ab^T c``, ``alpha = c / r_a``, ``beta = c / r_b``::

    L_one-way = c . log r_a - sum_q c_q a_q . b_q / tau
    L         = (c . log r_a + c . log r_b) / 2 - sum_q c_q a_q . b_q / tau
    tau dL_one-way/da = alpha (E_aa (c a) - 2 diag(E_aa) a + E_ab (c b)) + c E_aa (alpha a) - c b
    tau dL_one-way/db = c E_ab^T (alpha a) - c a

(row-wise products; the symmetric gradients are the halves of both directions' terms.)
 Summed over rows, not averaged. Rows are L2-normalised first
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


def grace_loss(view1: Tensor, view2: Tensor, tau: float, symmetric: bool = True,
               counts: Tensor | None = None) -> Tensor:
    """Sum over rows of the symmetric loss of the module docstring (at least float32); the
    one-way sum ``sum_i l(a, b)_i`` when not ``symmetric``. ``counts``: row ``q`` stands for
    ``counts[q]`` identical rows (the counted form: the loss of the rows repeated)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = l2_normalize_rows(to_at_least_float32(view1))
        b = l2_normalize_rows(view2.to(a.dtype))
        if counts is None and symmetric and 1.0 / tau < _MAX_INV_TAU:
            return _Grace.apply(a, b, tau)
        c = a.new_ones(a.shape[0]) if counts is None else counts.to(a.dtype)
        if 1.0 / tau >= _MAX_INV_TAU:
            return _grace_logsumexp(a, b, 1.0 / tau, symmetric, c)
        return _CountedGrace.apply(a, b, tau, c, symmetric)


def _grace_logsumexp(a: Tensor, b: Tensor, inv_tau: float, symmetric: bool = True,
                     counts: Tensor | None = None) -> Tensor:
    """The same loss written with ``logsumexp`` (stable for any temperature)."""
    c = a.new_ones(a.shape[0]) if counts is None else counts
    # log of each column's multiplicity; a row's own copy leaves its diagonal (log 0 = -inf)
    log_c = c.log().expand(a.shape[0], -1)
    log_within = log_c.clone()
    log_within.diagonal().copy_((c - 1.0).log())
    between = torch.mm(a * inv_tau, b.t())
    within_a = torch.mm(a * inv_tau, a.t()) + log_within
    from_a = (torch.logsumexp(torch.cat([within_a, between + log_c], dim=1), dim=1) * c).sum()
    positive = (torch.diagonal(between) * c).sum()
    if not symmetric:
        return from_a - positive
    within_b = torch.mm(b * inv_tau, b.t()) + log_within
    from_b = (torch.logsumexp(torch.cat([within_b, between.t() + log_c], dim=1), dim=1)
              * c).sum()
    return 0.5 * (from_a + from_b) - positive


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



class _CountedGrace(torch.autograd.Function):
    """The loss for distinct row-normalised ``a``, ``b`` standing for ``counts`` rows each (the
    counted form of the module docstring), one-way or symmetric."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, tau: float, counts: Tensor,
                symmetric: bool) -> Tensor:
        inv_tau = 1.0 / tau
        c = counts.unsqueeze(1)
        exp_ab = torch.mm(a * inv_tau, b.t())
        positive = (torch.diagonal(exp_ab) * counts).sum()
        exp_ab = exp_ab.exp_()
        exp_aa = torch.mm(a * inv_tau, a.t()).exp_()
        r_a = (exp_aa @ c).add_(exp_ab @ c).sub_(torch.diagonal(exp_aa).unsqueeze(1))
        loss = (r_a.log() * c).sum()
        saved = [a, b, c, exp_ab, exp_aa, r_a]
        if symmetric:
            exp_bb = torch.mm(b * inv_tau, b.t()).exp_()
            r_b = (exp_bb @ c).add_(exp_ab.t() @ c).sub_(torch.diagonal(exp_bb).unsqueeze(1))
            loss = 0.5 * (loss + (r_b.log() * c).sum())
            saved += [exp_bb, r_b]
        ctx.save_for_backward(*saved)
        ctx.inv_tau, ctx.symmetric = inv_tau, symmetric
        return loss - positive

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b, c, exp_ab, exp_aa, r_a, *rest = ctx.saved_tensors
        half = 0.5 if ctx.symmetric else 1.0
        d = a.shape[1]
        alpha = c / r_a
        a_pair = torch.cat([c * a, alpha * a], dim=1)  # [c a, alpha a]
        b_pair = b * c
        grad_a = grad_b = None
        if ctx.symmetric:
            exp_bb, r_b = rest
            beta = c / r_b
            b_pair = torch.cat([b_pair, beta * b], dim=1)
        if ctx.needs_input_grad[0]:
            within = exp_aa @ a_pair
            across = exp_ab @ b_pair
            own = torch.diagonal(exp_aa).unsqueeze(1) * a * 2.0
            grad_a = (within[:, :d] + across[:, :d] - own).mul_(alpha).add_(c * within[:, d:])
            grad_a = grad_a.mul_(half)
            if ctx.symmetric:
                grad_a = grad_a.add_(c * across[:, d:], alpha=0.5)
            grad_a = grad_a.sub_(c * b).mul_(grad * ctx.inv_tau)
        if ctx.needs_input_grad[1]:
            across = exp_ab.t() @ a_pair
            grad_b = (c * across[:, d:]).mul_(half)
            if ctx.symmetric:
                within = exp_bb @ b_pair
                own = torch.diagonal(exp_bb).unsqueeze(1) * b * 2.0
                grad_b = grad_b.add_(
                    (within[:, :d] + across[:, :d] - own).mul_(beta).add_(c * within[:, d:]),
                    alpha=0.5)
            grad_b = grad_b.sub_(c * a).mul_(grad * ctx.inv_tau)
        return grad_a, grad_b, None, None, None
