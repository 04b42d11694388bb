"""Data layer: read three common layouts, map ids once, split reproducibly."""

from simkgcl.data.dataset import Interactions, KnowledgeDataset, Split
from simkgcl.data.loader import bundled_names, load_dataset, resolve_dataset_path
from simkgcl.data.split import split_dataset
from simkgcl.data.stats import dataset_stats
from simkgcl.data.writer import write_atomic

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
