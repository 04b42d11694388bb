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


def _edit_meta(run_dir: Path, **changes: object) -> None:
    meta_path = run_dir / "artifact" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def _edit_tensors(run_dir: Path, **changes: torch.Tensor) -> None:
    path = run_dir / "artifact" / "tensors.pt"
    tensors = torch.load(path, weights_only=True)
    tensors.update(changes)
    torch.save(tensors, path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"user_tokens": 5}, r"meta\.json: user_tokens must be a list of strings"),
    ({"item_tokens": [f"i{i}" for i in range(N_ITEMS - 1)] + [7]},
     r"meta\.json: item_tokens must be a list of strings \(entry 59 is 7\)"),
    ({"model": ["SimKGCL"]}, r"meta\.json: model must be a non-empty string"),
    ({"config": "seed=1"}, r"meta\.json: config must be a JSON object"),
])
def test_malformed_meta_is_a_one_line_error(tmp_path: Path, changes, message) -> None:
    run = make_toy_run(tmp_path / "run")
    _edit_meta(run.run_dir, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(run.run_dir)


def test_duplicate_user_tokens_are_refused_at_load(tmp_path: Path) -> None:
    """Else user 'user-11' would silently get the recommendations of the user that shares it."""
    run = make_toy_run(tmp_path / "run")
    tokens = list(run.user_tokens)
    tokens[1] = tokens[0]
    _edit_meta(run.run_dir, user_tokens=tokens)
    with pytest.raises(ArtifactError, match=r"user tokens must be unique .*'user-11'"):
        load_artifact(run.run_dir)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_refused_at_load_and_save(tmp_path: Path, bad: float) -> None:
    run = make_toy_run(tmp_path / "run")
    item_emb = torch.from_numpy(run.item_emb.copy())
    item_emb[4, 2] = bad
    _edit_tensors(run.run_dir, item_embeddings=item_emb)
    with pytest.raises(ArtifactError, match=r"tensors\.pt: item_embeddings .*not finite"):
        load_artifact(run.run_dir)
    with pytest.raises(ArtifactError, match="item_embeddings .*not finite"):
        save_artifact(tmp_path / "other", model="m", dataset="d", config={}, metrics={},
                      user_tokens=run.user_tokens, item_tokens=run.item_tokens,
                      user_embeddings=torch.from_numpy(run.user_emb), item_embeddings=item_emb,
                      train_users=np.array([0]), train_items=np.array([0]))
    assert not (tmp_path / "other" / "artifact" / "tensors.pt").exists()


def test_embeddings_of_another_dtype_are_refused_at_load(tmp_path: Path) -> None:
    run = make_toy_run(tmp_path / "run")
    _edit_tensors(run.run_dir, user_embeddings=torch.from_numpy(run.user_emb).double())
    with pytest.raises(ArtifactError, match=r"user_embeddings must be float32"):
        load_artifact(run.run_dir)


def test_pickled_tensor_file_message_is_one_line_without_torch_advice(tmp_path: Path) -> None:
    run = make_toy_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    with open(run.run_dir / "artifact" / "tensors.pt", "wb") as fh:
        torch.save({"user_embeddings": _Bomb(marker)}, fh)
    with pytest.raises(ArtifactError) as info:
        load_artifact(run.run_dir)
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message
    assert "pickled Python object" in message and "tensors.pt" in message
    assert not marker.exists()


def test_save_fsyncs_the_folder_after_renaming(tmp_path: Path, monkeypatch) -> None:
    """Without a folder fsync the renames may be lost in a power cut after save returned."""
    import os
    import stat

    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    make_toy_run(tmp_path / "run")
    assert synced.count(True) == 2 and synced.count(False) == 2  # two files, one folder each
    assert sorted(p.name for p in (tmp_path / "run" / "artifact").iterdir()) == [
        "meta.json", "tensors.pt"]
