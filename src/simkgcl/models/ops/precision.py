"""The operators' precision rule: sparse products, softmaxes, normalisations and InfoNCE run in
at least float32, also under autocast (bf16/fp16 would lose the small attention weights)."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` promoted to at least float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def to_at_least_float32(x: Tensor) -> Tensor:
    return x.to(at_least_float32(x.dtype))
