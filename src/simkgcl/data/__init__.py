"""Data layer: read three common layouts, map ids once, split reproducibly.

The public names below are imported on first use (PEP 562), so that the config layer and the
command line can read the data settings' rules (:mod:`simkgcl.data.options`, pure Python)
without importing pandas and the readers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simkgcl.data.dataset import Interactions, KnowledgeDataset, Split
    from simkgcl.data.loader import bundled_names, load_dataset, resolve_dataset_path
    from simkgcl.data.split import split_dataset
    from simkgcl.data.stats import dataset_stats
    from simkgcl.data.writer import write_atomic

_HOMES = {
    "Interactions": "simkgcl.data.dataset",
    "KnowledgeDataset": "simkgcl.data.dataset",
    "Split": "simkgcl.data.dataset",
    "bundled_names": "simkgcl.data.loader",
    "load_dataset": "simkgcl.data.loader",
    "resolve_dataset_path": "simkgcl.data.loader",
    "split_dataset": "simkgcl.data.split",
    "dataset_stats": "simkgcl.data.stats",
    "write_atomic": "simkgcl.data.writer",
}

__all__ = [
    "Interactions",
    "KnowledgeDataset",
    "Split",
    "bundled_names",
    "dataset_stats",
    "load_dataset",
    "resolve_dataset_path",
    "split_dataset",
    "write_atomic",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'simkgcl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
