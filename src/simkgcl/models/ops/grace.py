"""GRACE's symmetric contrastive loss between two views of the same rows (cosine, temperature
``tau``), with the other rows of *both* views as negatives (Zhu et al., 2020; KGCL's
``Contrast.grace_loss``)::

    l(a, b)_i = -log( e(a_i, b_i) / ( sum_{j != i} e(a_i, a_j) + sum_j e(a_i, b_j) ) )
    L = sum_i (l(a, b)_i + l(b, a)_i) / 2,        e(x, y) = exp(cos(x, y) / tau)

i.e. InfoNCE (:mod:`~.info_nce`) whose denominator also holds the intra-view pairs (the row's
own pair with itself left out). Summed over rows, not averaged. Rows are L2-normalised first
(``x / max(|x|, 1e-12)``, as ``F.normalize``), so every logit lies in ``[-1/tau, 1/tau]``.

Written as ``logsumexp`` over the ``n x 2n`` rows ``[a a^T (self masked), a b^T]`` and
``[b b^T (self masked), b a^T]``: the same value as the exponentials summed and the self term
subtracted, without forming the subtraction (which cancels digits when ``n`` is small).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simkgcl.models.ops.normalize import l2_normalize_rows
from simkgcl.models.ops.precision import to_at_least_float32


def grace_loss(view1: Tensor, view2: Tensor, tau: float) -> Tensor:
    """Sum over rows of the symmetric loss of the module docstring (at least float32)."""
    with torch.autocast(view1.device.type, enabled=False):
        a = l2_normalize_rows(to_at_least_float32(view1))
        b = l2_normalize_rows(view2.to(a.dtype))
        inv_tau = 1.0 / tau
        between = torch.mm(a * inv_tau, b.t())
        self_pairs = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
        within_a = torch.mm(a * inv_tau, a.t()).masked_fill(self_pairs, float("-inf"))
        within_b = torch.mm(b * inv_tau, b.t()).masked_fill(self_pairs, float("-inf"))
        positive = torch.diagonal(between).sum()
        from_a = torch.logsumexp(torch.cat([within_a, between], dim=1), dim=1).sum()
        from_b = torch.logsumexp(torch.cat([within_b, between.t()], dim=1), dim=1).sum()
        return 0.5 * (from_a + from_b) - positive
