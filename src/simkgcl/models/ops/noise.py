"""SimGCL's perturbation: uniform noise of norm ``eps`` in the orthant of each entry's sign::

    x' = x + eps * sign(x) * u / |u|,        u ~ U[0, 1)^d, one draw per row

so every row moves by exactly ``eps`` (rows of zeros, e.g. nodes without interactions, do not
move) without leaving its orthant. The draw (:func:`random_directions`) comes from the torch
global RNG, fresh per call, and is separate from its use (:func:`add_sign_aligned`) so that a
test can record it and replay it in a reference.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_directions(shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
                      device: torch.device) -> Tensor:
    """Rows of ``U[0, 1)^d`` scaled to unit length (``F.normalize(torch.rand(shape), dim=-1)``)."""
    u = torch.rand(shape, dtype=dtype, device=device)
    return u.div_(torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min_(1e-12))


def add_sign_aligned(x: Tensor, directions: Tensor, eps: float) -> Tensor:
    """``x + eps * sign(x) * directions`` (no gradient flows through the sign)."""
    return x + torch.sign(x.detach()).mul_(directions).mul_(eps)
