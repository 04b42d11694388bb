"""The artifact round-trips, refuses pickled code, and rejects other format versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import N_ITEMS, N_USERS, ToyRun, make_toy_run

from simkgcl.artifact import FORMAT_VERSION, load_artifact, save_artifact
from simkgcl.errors import ArtifactError


def test_round_trip_keeps_tokens_embeddings_and_seen_items(toy_run: ToyRun) -> None:
    art = load_artifact(toy_run.run_dir)
    assert art.user_tokens == toy_run.user_tokens and art.item_tokens == toy_run.item_tokens
    assert (art.model, art.dataset, art.embedding_dim) == ("SimKGCL", "toy", 8)
    assert art.metrics["test"]["recall@20"] == 0.25 and art.config["seed"] == 0
    assert torch.equal(art.user_embeddings, torch.from_numpy(toy_run.user_emb))
    assert torch.equal(art.item_embeddings, torch.from_numpy(toy_run.item_emb))
    for u in range(N_USERS):
        assert set(art.seen_items(u).tolist()) == toy_run.seen[u]
    # the artifact folder itself is accepted too
    assert load_artifact(toy_run.run_dir / "artifact").n_items == N_ITEMS


class _Bomb:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_tampered_tensor_file_with_pickled_code_is_refused(tmp_path: Path) -> None:
    run = make_toy_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    with open(run.run_dir / "artifact" / "tensors.pt", "wb") as fh:
        torch.save({"user_embeddings": _Bomb(marker)}, fh)
    with pytest.raises(ArtifactError, match="cannot be loaded safely"):
        load_artifact(run.run_dir)
    assert not marker.exists()


def test_other_format_version_is_a_clear_error(tmp_path: Path) -> None:
    run = make_toy_run(tmp_path / "run")
    meta_path = run.run_dir / "artifact" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"format version .* not supported"):
        load_artifact(run.run_dir)


def test_missing_artifact_and_inconsistent_tensors_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no model artifact found"):
        load_artifact(tmp_path)
    run = make_toy_run(tmp_path / "run")
    path = run.run_dir / "artifact" / "tensors.pt"
    tensors = torch.load(path, weights_only=True)
    tensors["seen_indices"] = tensors["seen_indices"] + N_ITEMS  # ids beyond the item table
    torch.save(tensors, path)
    with pytest.raises(ArtifactError, match="seen-items index"):
        load_artifact(run.run_dir)


def test_save_refuses_duplicate_tokens_and_out_of_range_ids(tmp_path: Path) -> None:
    common = dict(model="m", dataset="d", config={}, metrics={},
                  user_embeddings=torch.zeros(2, 4), item_embeddings=torch.zeros(3, 4))
    with pytest.raises(ArtifactError, match="unique"):
        save_artifact(tmp_path, user_tokens=["a", "a"], item_tokens=["x", "y", "z"],
                      train_users=np.array([0]), train_items=np.array([0]), **common)
    with pytest.raises(ArtifactError, match="item ids"):
        save_artifact(tmp_path, user_tokens=["a", "b"], item_tokens=["x", "y", "z"],
                      train_users=np.array([0]), train_items=np.array([3]), **common)
