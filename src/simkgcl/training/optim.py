"""The optimiser and the autocast context of a training run, chosen from its config.

Kept apart from the loop (:mod:`simkgcl.training.trainer`) because they are pure choices from
config keys (``learner``, ``fused_optimizer``, ``mixed_precision``) with their device rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from simkgcl.errors import ConfigError


def build_optimizer(name: str, params, *, lr: float, weight_decay: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The optimiser the config's ``learner`` names (``fused``: Adam's single-kernel step)."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        if fused:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown learner {name!r}")



def fused_adam_ok(config: Mapping[str, Any], model: nn.Module) -> bool:
    """Fused Adam when asked for (``fused_optimizer``) and the parameters' device supports it."""
    if config["learner"] != "adam" or not config.get("fused_optimizer", True):
        return False
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return False
    device = params[0].device.type
    supported = getattr(torch.utils._foreach_utils, "_get_fused_kernels_supported_devices",
                        lambda: ["cuda"])()
    return device in supported and all(p.is_floating_point() for p in params)


def autocast_context(mode: str, model: nn.Module) -> Callable[[], Any]:
    """A factory of autocast contexts for the training forward pass (``mixed_precision``)."""
    if mode == "none":
        return nullcontext
    params = list(model.parameters())
    device = params[0].device.type if params else "cpu"
    if device != "cuda":
        raise ConfigError(f"mixed_precision={mode!r} needs a CUDA device (this run is on "
                          f"{device}); use mixed_precision=none")
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
