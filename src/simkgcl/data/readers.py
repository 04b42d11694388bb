"""Layout detection and the three readers (RecBole atomic, KGAT line-per-user, KGCN ratings).

Readers only parse: they return :class:`RawData` (original tokens, file order). Mapping tokens
to contiguous ids, de-duplication and the knowledge graph's entity table are built once, for all
layouts, in :mod:`simkgcl.data.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simkgcl.data.io import read_atomic, read_int_table, read_user_lines
from simkgcl.data.options import check_benchmark_filename
from simkgcl.errors import InputError

EXPECTED_LAYOUTS = (
    "RecBole atomic files '<name>.inter' (or '<name>.train.inter' + '<name>.test.inter') "
    "with optional '<name>.kg' + '<name>.link'; "
    "KGAT/KGIN 'train.txt' + 'test.txt' with optional 'kg_final.txt' or 'kg.txt'; "
    "KGCN/MCCLK 'ratings_final.txt' with optional 'kg_final.txt' "
    "(any of them may be gzipped, '.gz')"
)


@dataclass
class InteractionPart:
    """Interactions read from one file (or one benchmark part), in file order."""

    name: str  # "all", "train", "valid" or "test"
    users: np.ndarray  # int64 ids or str tokens
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    source: str = ""


@dataclass
class RawData:
    """What a reader found, before ids are assigned."""

    name: str
    layout: str
    parts: list[InteractionPart]
    # Triples as three token arrays (int64 for integer layouts, str for atomic files) or None.
    kg: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # Atomic layout: (item tokens, entity tokens) from the .link file. Integer layouts: None,
    # meaning the KG shares the item id space (or uses its own tail space, see kg_id_space).
    link: tuple[np.ndarray, np.ndarray] | None = None
    kg_id_space: str = "shared"
    # Benchmark part names as listed by the user, e.g. ["train", "test", "test"].
    part_order: list[str] = field(default_factory=list)
    # True when the validation part is the test file itself (benchmark [train, test, test]).
    valid_is_test: bool = False
    report: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def list_files(folder: Path) -> dict[str, Path]:
    """Logical file name (``.gz`` stripped) -> path; a plain file wins over its gzipped twin."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        logical = path.name[:-3] if path.name.endswith(".gz") else path.name
        if logical not in found or not path.name.endswith(".gz"):
            found[logical] = path
    return found


def _atomic_names(files: dict[str, Path]) -> list[str]:
    names = set()
    for logical in files:
        if logical.endswith(".inter"):
            stem = logical[: -len(".inter")]
            for part in (".train", ".valid", ".test"):
                if stem.endswith(part):
                    stem = stem[: -len(part)]
                    break
            names.add(stem)
    return sorted(names)


def detect_layout(folder: Path, files: dict[str, Path]) -> str:
    """Which reader fits the files in ``folder``."""
    if _atomic_names(files):
        return "atomic"
    if "train.txt" in files or "test.txt" in files:
        return "kgat"
    if "ratings_final.txt" in files:
        return "kgcn"
    shown = ", ".join(sorted(files)[:12]) or "nothing"
    raise InputError(f"unknown dataset layout; expected {EXPECTED_LAYOUTS}; found: {shown}", folder)


def _require(folder: Path, files: dict[str, Path], logical: str, layout: str) -> Path:
    if logical not in files:
        raise InputError(
            f"{layout} layout needs '{logical}' (or '{logical}.gz'), not found", folder
        )
    return files[logical]


# ---------------------------------------------------------------------------------------------
# RecBole atomic files


def read_atomic_folder(
    folder: Path, files: dict[str, Path], benchmark_filename: list[str] | None
) -> RawData:
    """RecBole atomic layout: ``.inter`` (or benchmark files), ``.kg`` and ``.link``."""
    names = _atomic_names(files)
    if not names:
        raise InputError(
            "atomic layout needs '<name>.inter' (or '<name>.train.inter' + '<name>.test.inter'), "
            "none found",
            folder,
        )
    if len(names) > 1:
        if folder.name in names:
            names = [folder.name]
        else:
            raise InputError(
                f"several atomic datasets in one folder ({', '.join(names)}); expected one "
                f"'<name>.inter' (or the one named like the folder)",
                folder,
            )
    name = names[0]
    raw = RawData(name=name, layout="atomic", parts=[])

    part_order: list[str]
    if benchmark_filename:
        part_order = check_benchmark_filename("benchmark_filename", benchmark_filename)
    elif f"{name}.train.inter" in files or f"{name}.test.inter" in files:
        part_order = [p for p in ("train", "valid", "test") if f"{name}.{p}.inter" in files]
        if "train" not in part_order or "test" not in part_order:
            raise InputError(
                f"benchmark files need both '{name}.train.inter' and '{name}.test.inter'; "
                f"found only {', '.join(f'{name}.{p}.inter' for p in part_order)}",
                folder,
            )
    else:
        part_order = []

    columns = ("user_id", "item_id")
    optional = ("rating", "timestamp")
    if part_order:
        raw.part_order = part_order
        for role, part in _roles(raw, part_order):
            path = _require(folder, files, f"{name}.{part}.inter", "atomic benchmark")
            frame = read_atomic(path, columns, optional)
            raw.parts.append(_atomic_part(role, frame, path))
            raw.files.append(str(path))
    else:
        path = _require(folder, files, f"{name}.inter", "atomic")
        frame = read_atomic(path, columns, optional)
        raw.parts.append(_atomic_part("all", frame, path))
        raw.files.append(str(path))

    has_kg, has_link = f"{name}.kg" in files, f"{name}.link" in files
    if has_kg != has_link:
        present, absent = (".kg", ".link") if has_kg else (".link", ".kg")
        raise InputError(
            f"found '{name}{present}' but not '{name}{absent}'; a knowledge graph needs both "
            f"'{name}.kg' (head_id, relation_id, tail_id) and '{name}.link' (item_id, entity_id)",
            folder,
        )
    if has_kg:
        kg_path, link_path = files[f"{name}.kg"], files[f"{name}.link"]
        kg = read_atomic(kg_path, ("head_id", "relation_id", "tail_id"))
        link = read_atomic(link_path, ("item_id", "entity_id"))
        raw.kg = (
            kg["head_id"].to_numpy(dtype=object),
            kg["relation_id"].to_numpy(dtype=object),
            kg["tail_id"].to_numpy(dtype=object),
        )
        raw.link = (
            link["item_id"].to_numpy(dtype=object),
            link["entity_id"].to_numpy(dtype=object),
        )
        raw.files += [str(kg_path), str(link_path)]
    else:
        raw.warnings.append(f"no knowledge graph ('{name}.kg' + '{name}.link') in {folder}")
    return raw


def _atomic_part(role: str, frame: pd.DataFrame, path: Path) -> InteractionPart:
    return InteractionPart(
        name=role,
        users=frame["user_id"].to_numpy(dtype=object),
        items=frame["item_id"].to_numpy(dtype=object),
        ratings=frame["rating"].to_numpy() if "rating" in frame else None,
        timestamps=frame["timestamp"].to_numpy() if "timestamp" in frame else None,
        source=str(path),
    )


def _roles(raw: RawData, part_order: list[str]) -> list[tuple[str, str]]:
    """(role, part name) pairs to read; a validation part equal to the test part is read once."""
    if len(part_order) == 3 and part_order[1] == part_order[2]:
        raw.valid_is_test = True
        return [("train", part_order[0]), ("test", part_order[2])]
    roles = ("train", "valid", "test") if len(part_order) == 3 else ("train", "test")
    return list(zip(roles, part_order, strict=True))


# ---------------------------------------------------------------------------------------------
# KGAT / KGCL / KGIN


def read_kgat_folder(
    folder: Path, files: dict[str, Path], kg_id_space: str, benchmark_filename: list[str] | None
) -> RawData:
    """KGAT layout: ``train.txt``/``test.txt`` (a line per user) and ``kg_final.txt``/``kg.txt``."""
    part_order = check_benchmark_filename("benchmark_filename", benchmark_filename) or [
        "train",
        "test",
    ]
    raw = RawData(name=folder.name, layout="kgat", parts=[], part_order=part_order)
    raw.kg_id_space = kg_id_space
    empty_lines = 0
    for role, part in _roles(raw, part_order):
        path = _require(folder, files, f"{part}.txt", "KGAT")
        users, items, n_empty = read_user_lines(path)
        empty_lines += n_empty
        raw.parts.append(InteractionPart(role, users, items, source=str(path)))
        raw.files.append(str(path))
    raw.report["user_lines_without_items"] = empty_lines
    kg_name = next((n for n in ("kg_final.txt", "kg.txt") if n in files), None)
    if kg_name is not None:
        if "kg_final.txt" in files and "kg.txt" in files:
            raw.warnings.append("both kg_final.txt and kg.txt present: using kg_final.txt")
        raw.kg = _read_int_kg(files[kg_name])
        raw.files.append(str(files[kg_name]))
    else:
        raw.warnings.append(f"no knowledge graph (kg_final.txt or kg.txt) in {folder}")
    return raw


def _read_int_kg(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = read_int_table(path, 3, "head relation tail")
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy()


# ---------------------------------------------------------------------------------------------
# KGCN / MCCLK


def read_kgcn_folder(folder: Path, files: dict[str, Path], kg_id_space: str) -> RawData:
    """KGCN layout: ``ratings_final.txt`` (user item label) and ``kg_final.txt``.

    Label-1 rows are kept; label-0 rows (KGCN's sampled negatives) are counted and dropped; any
    other label ("-1", "2", "1.0") is an error at its line.
    """
    path = _require(folder, files, "ratings_final.txt", "KGCN")
    table = read_int_table(path, 3, "user item label", label_column=2)
    labels = table[:, 2]
    positive = labels == 1
    raw = RawData(name=folder.name, layout="kgcn", parts=[])
    raw.kg_id_space = kg_id_space
    raw.parts.append(
        InteractionPart("all", table[positive, 0], table[positive, 1], source=str(path))
    )
    raw.report["negative_labels_dropped"] = int((~positive).sum())
    raw.files.append(str(path))
    if "kg_final.txt" in files:
        raw.kg = _read_int_kg(files["kg_final.txt"])
        raw.files.append(str(files["kg_final.txt"]))
    else:
        raw.warnings.append(f"no knowledge graph (kg_final.txt) in {folder}")
    return raw
