"""Model registry. Each model lives in its own module, imported on first use."""

from __future__ import annotations

import importlib

from simkgcl.errors import ConfigError
from simkgcl.models.base import Recommender

# registry key -> (module, class name)
_MODELS: dict[str, tuple[str, str]] = {
    "bpr": ("simkgcl.models.bpr", "BPR"),
    "kgat": ("simkgcl.models.kgat", "KGAT"),
    "kgin": ("simkgcl.models.kgin", "KGIN"),
    "lightgcn": ("simkgcl.models.lightgcn", "LightGCN"),
    "pop": ("simkgcl.models.pop", "Pop"),
    "mcclk": ("simkgcl.models.mcclk", "MCCLK"),
    "kgcl": ("simkgcl.models.kgcl", "KGCL"),
    "simkgcl": ("simkgcl.models.simkgcl", "SimKGCL"),
    "sgl": ("simkgcl.models.sgl", "SGL"),
    "simgcl": ("simkgcl.models.simgcl", "SimGCL"),
    "xsimgcl": ("simkgcl.models.xsimgcl", "XSimGCL"),
}


def available_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[Recommender]:
    key = name.lower()
    if key not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, cls = _MODELS[key]
    return getattr(importlib.import_module(module), cls)


__all__ = ["Recommender", "available_models", "get_model_class"]
