"""A tiny experiment (tiny dataset on disk, bpr and lightgcn × 2 seeds, 3 epochs), run once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "training"))

from engine_fixtures import write_kgcn_folder  # noqa: E402

SETTINGS = ("{epochs: 3, topk: [5, 10], valid_metric: NDCG@10, device: cpu, threads: 1, "
            "embedding_size: 16, learning_rate: 0.02}")


def write_experiment(folder: Path, body: str = "") -> Path:
    """An experiment file beside a tiny dataset folder ``tiny`` (relative path)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tiny").is_dir():
        write_kgcn_folder(folder / "tiny", n_users=40, n_items=30, per_user=10)
    text = body or f"""
name: tiny-compare
datasets:
  tiny: tiny
models:
  bpr: {{}}
  lightgcn: {{settings: {{n_layers: 2}}}}
seeds: [1, 2]
settings: {SETTINGS}
baseline: bpr
significance_metric: NDCG@10
"""
    path = folder / "experiment.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment folder of the tiny experiment, run in-process with the CLI."""
    from simkgcl.cli import main

    folder = tmp_path_factory.mktemp("experiment")
    spec = write_experiment(folder)
    out = folder / "out"
    assert main(["compare", str(spec), "--out", str(out), "--no-progress"]) == 0
    return out
