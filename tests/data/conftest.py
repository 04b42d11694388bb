"""Fixtures for the data tests: the shared real datasets and a helper for hand-made folders."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest


def _shared_root() -> Path:
    env = os.environ.get("SIMKGCL_SHARED")
    if env:
        return Path(env)
    # <repo>/tests/data/conftest.py -> <repo>/../shared (the shared folder sits beside the clone)
    return (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()


SHARED = _shared_root()


@pytest.fixture
def shared() -> Path:
    """Root of the shared material; the test is skipped when it is not there."""
    if not (SHARED / "datasets").is_dir():
        pytest.skip(f"shared datasets not found at {SHARED} (set SIMKGCL_SHARED to point at them)")
    return SHARED


def make_folder(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> text) into ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@functools.lru_cache(maxsize=8)
def _cached_dataset(path: str):
    from simkgcl.data import load_dataset

    return load_dataset(path)


@pytest.fixture
def real(shared):
    """``real("ml-100k")``: a shared dataset, loaded once per session (tests only read it)."""
    return lambda name, kind="datasets": _cached_dataset(str(shared / kind / name))


@pytest.fixture
def folder_of():
    """``folder_of(path, {name: text})`` writes a hand-made dataset folder."""
    return make_folder
