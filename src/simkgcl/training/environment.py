"""The process-wide state a run sets: random seeds and torch's CPU thread count."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int, reproducible: bool) -> None:
    """Seed Python, numpy and torch; deterministic cuDNN when asked (cheap)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = reproducible
        torch.backends.cudnn.benchmark = not reproducible


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Let torch use ``n`` CPU threads inside the block (None: leave it alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
