"""RunFolder (every path and read/write of a run) and build_components' data-parallel split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_fixtures import make_tiny_data

import simkgcl.training.run_folder as run_folder_module
from simkgcl.config import Config
from simkgcl.errors import ArtifactError
from simkgcl.training.components import build_components
from simkgcl.training.run_folder import RunFolder


def test_a_new_folder_is_named_after_model_dataset_and_time_and_never_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_folder_module, "timestamped_name",
                        lambda *parts: "-".join([*parts, "20260101-000000"]))
    first = RunFolder.create(tmp_path / "runs", "bpr", "data")
    second = RunFolder.create(tmp_path / "runs", "bpr", "data")
    assert first.path == tmp_path / "runs" / "bpr-data-20260101-000000"
    assert second.path == tmp_path / "runs" / "bpr-data-20260101-000000-2"
    assert first.checkpoint_dir.is_dir() and not RunFolder.is_run_folder(first.path)


def test_awkward_dataset_names_become_safe_folder_names(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "bpr", "my data/v1:x")
    assert folder.path.parent == tmp_path and folder.path.name.startswith("bpr-my_data_v1_x-")


def test_history_skips_a_line_cut_short_and_truncates_for_a_resume(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    for epoch in range(3):
        folder.append_metrics({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    with open(folder.metrics_path, "a") as fh:
        fh.write('{"epoch": 3, "lo')  # a crash in the middle of a write
    assert [r["epoch"] for r in folder.read_history()] == [0, 1, 2]
    assert [r["epoch"] for r in folder.read_history(before_epoch=2)] == [0, 1]
    folder.truncate_history(before_epoch=1)
    assert folder.metrics_path.read_text() == json.dumps({"epoch": 0, "loss": 1.0}) + "\n"


def test_results_round_trip_and_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    with pytest.raises(ArtifactError, match="no results.json"):
        folder.read_results()
    folder.write_results({"test": None, "best_epoch": 2})
    folder.record_test_metrics({"NDCG@10": 0.25})
    assert folder.read_results() == {"test": {"NDCG@10": 0.25}, "best_epoch": 2}
    with pytest.raises(ArtifactError, match="not a run folder"):
        folder.read_config()


def _steps(sampler, epoch: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
    return [(u.tolist(), p.tolist(), n.tolist()) for u, p, n in sampler.epoch(epoch)]


def test_two_ranks_split_a_mean_loss_model_and_share_a_batch_loss_model() -> None:
    ds, split = make_tiny_data()
    cpu = torch.device("cpu")

    def sampler(model: str, batch: int, rank: int = 0, world: int = 1):
        config = Config(model=model, train_batch_size=batch, embedding_size=4, topk=[5],
                        valid_metric="NDCG@5")
        return build_components(config, ds, split, cpu, rank, world).sampler

    # BPR (a batch mean): each rank trains on its own half of every step of the single run
    one = _steps(sampler("bpr", 64))
    halves = [_steps(sampler("bpr", 32, rank, 2)) for rank in (0, 1)]
    assert [tuple(a + b for a, b in zip(h0, h1, strict=True))
            for h0, h1 in zip(*halves, strict=True)] == one
    # SimKGCL (a loss over the whole batch): both ranks hold the single run's whole steps
    one = _steps(sampler("simkgcl", 64))
    assert _steps(sampler("simkgcl", 32, 0, 2)) == _steps(sampler("simkgcl", 32, 1, 2)) == one
