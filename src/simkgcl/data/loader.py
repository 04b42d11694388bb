"""``load_dataset``: resolve a path or bundled name, pick a reader, build the dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from simkgcl.data.build import build_dataset
from simkgcl.data.dataset import KnowledgeDataset
from simkgcl.data.options import (
    DEFAULT_DATASET,
    check_benchmark_filename,
    check_kg_id_space,
    check_layout,
    check_threshold,
)
from simkgcl.data.readers import (
    detect_layout,
    list_files,
    read_atomic_folder,
    read_kgat_folder,
    read_kgcn_folder,
)
from simkgcl.errors import ConfigError, InputError

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


def bundled_names() -> list[str]:
    """Datasets shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(
        p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")
    )


def resolve_dataset_path(path: str | Path | None) -> Path:
    """Folder holding the dataset: a path on disk wins over a bundled name of the same spelling."""
    if path is None or str(path) == "":
        return BUNDLED_DIR / DEFAULT_DATASET
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate.parent if candidate.is_file() else candidate
    if str(path) in bundled_names():
        return BUNDLED_DIR / str(path)
    raise InputError(
        "dataset folder not found; expected a folder of data files or a bundled dataset name "
        f"({', '.join(bundled_names()) or 'none bundled'})",
        candidate,
    )


def load_dataset(
    path: str | Path | None = None,
    *,
    format: str | None = None,
    kg_id_space: str = "shared",
    threshold: dict | None = None,
    kg_reverse_r: bool = False,
    benchmark_filename: list[str] | None = None,
) -> KnowledgeDataset:
    """Read a dataset folder in any supported layout into a :class:`KnowledgeDataset`.

    ``format`` forces a reader ("atomic", "kgat", "kgcn"); by default it is chosen from the file
    names. ``kg_id_space`` says how integer KG files relate to item ids: "shared" (item i is
    entity i, KGAT/KGIN/KGCN ``kg_final.txt``) or "separate" (heads are item ids, tails have their
    own ids, KGCL ``kg.txt``). ``threshold`` keeps rows with e.g. ``rating >= 4``.
    ``benchmark_filename`` names the split files, e.g. ``["train", "valid", "test"]``.
    """
    format = check_layout("data_format", format)
    kg_id_space = check_kg_id_space("kg_id_space", kg_id_space)
    threshold = check_threshold("threshold", threshold)
    benchmark_filename = check_benchmark_filename("benchmark_filename", benchmark_filename)
    folder = resolve_dataset_path(path)
    if not folder.is_dir():
        raise InputError("expected a dataset folder, found something else", folder)
    files = list_files(folder)
    layout = format or detect_layout(folder, files)
    if layout == "atomic":
        raw = read_atomic_folder(folder, files, benchmark_filename)
    elif layout == "kgat":
        raw = read_kgat_folder(folder, files, kg_id_space, benchmark_filename)
    else:
        if benchmark_filename:
            raise ConfigError(
                "benchmark_filename needs split files; the KGCN layout (ratings_final.txt) has none"
            )
        raw = read_kgcn_folder(folder, files, kg_id_space)
    if layout == "atomic" and kg_id_space != "shared":
        log.info("kg_id_space is ignored for atomic files: the .link file maps items to entities")
    dataset = build_dataset(raw, threshold=threshold, kg_reverse_r=kg_reverse_r)
    log.info(
        "loaded %s (%s layout): %d users, %d items, %d interactions, %d entities, %d relations, "
        "%d triples",
        dataset.name,
        layout,
        dataset.n_users,
        dataset.n_items,
        len(dataset.interactions),
        dataset.n_entities,
        dataset.n_relations,
        dataset.n_triples,
    )
    return dataset
