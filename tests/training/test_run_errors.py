"""Run folders that are damaged or cannot be written, and the seed's own split setting.

Every failure is one line on stderr naming the file, exit code 2, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import write_atomic_train_test_folder, write_kgcn_folder

from simkgcl.cli import main
from simkgcl.config import Config
from simkgcl.training.run import evaluate_run, train

SMALL = ["show_progress=false", "topk=[5,10]", "valid_metric=NDCG@10", "device=cpu",
         "embedding_size=8"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch BPR run (tests copy what they damage)."""
    root = tmp_path_factory.mktemp("run")
    write_kgcn_folder(root / "tiny")
    result = train(Config(model="bpr", dataset=str(root / "tiny"), epochs=2,
                          checkpoint_dir=str(root / "runs"), overrides=SMALL))
    return result.run_dir


def _copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / run.name))


def _one_line_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("checkpoint", ["best.pt", "last.pt"])
def test_a_checkpoint_without_weights_is_one_line_naming_the_file(
        finished_run: Path, tmp_path: Path, capsys, checkpoint: str) -> None:
    run = _copy_run(finished_run, tmp_path)
    target = run / "checkpoints" / checkpoint
    if checkpoint == "last.pt":
        (run / "checkpoints" / "best.pt").unlink()  # evaluate then falls back to last.pt
    torch.save({"format": 1}, target)
    err = _one_line_error(capsys, "evaluate", str(run))
    assert str(target) in err and "'model'" in err
    if checkpoint == "last.pt":
        err = _one_line_error(capsys, "train", "--resume", str(run), "epochs=3")
        assert str(target) in err


def test_weights_of_another_shape_are_refused_by_evaluate_and_resume(
        finished_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(finished_run, tmp_path)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"] = {k: torch.zeros(v.shape[0], v.shape[1] + 1)
                         for k, v in ckpt["model"].items()}
        torch.save(ckpt, path)
    err = _one_line_error(capsys, "evaluate", str(run))
    assert str(run / "checkpoints" / "best.pt") in err and "shape" in err
    err = _one_line_error(capsys, "train", "--resume", str(run), "epochs=3")
    assert str(run / "checkpoints" / "last.pt") in err and "shape" in err


def test_a_damaged_training_state_is_refused_on_resume(finished_run: Path, tmp_path: Path,
                                                       capsys) -> None:
    run = _copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state"]["patience"]
    torch.save(ckpt, path)
    err = _one_line_error(capsys, "train", "--resume", str(run), "epochs=3")
    assert str(path) in err and "patience" in err
    ckpt["state"]["patience"] = 0
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(ckpt, path)
    err = _one_line_error(capsys, "train", "--resume", str(run), "epochs=3")
    assert str(path) in err and "optimiser" in err


def test_a_checkpoint_dir_that_cannot_be_written_is_one_line(tmp_path: Path, capsys) -> None:
    write_kgcn_folder(tmp_path / "tiny")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = _one_line_error(capsys, "train", "--dataset", str(tmp_path / "tiny"), "--model", "bpr",
                          "epochs=1", f"checkpoint_dir={blocker / 'runs'}", *SMALL)
    assert str(blocker) in err and "cannot write the run folder" in err


def _recall_at(k: int, user_emb: np.ndarray, item_emb: np.ndarray, train: set, test: dict
               ) -> float:
    """Recall@k computed by hand: training items never ranked, test items are the answers."""
    recalls = []
    for user, answers in test.items():
        scores = user_emb[user] @ item_emb.T
        for item in (i for u, i in train if u == user):
            scores[item] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        recalls.append(len(answers & set(top.tolist())) / len(answers))
    return float(np.mean(recalls))


def test_benchmark_files_train_test_test_validate_and_test_on_the_test_file(
        tmp_path: Path, capsys) -> None:
    folder = tmp_path / "tt"
    write_atomic_train_test_folder(folder)
    config = Config(model="bpr", dataset=str(folder), epochs=4, learning_rate=0.05,
                    checkpoint_dir=str(tmp_path / "runs"),
                    benchmark_filename=["train", "test", "test"], overrides=SMALL)
    result = train(config)
    # validation is the test file, and both exclude training items only: the best model's
    # test metrics are its validation metrics, and they are not zero
    assert result.test == result.best_valid
    assert result.test["Recall@10"] > 0.2
    # an independent Recall@10 from the best weights
    weights = torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    from simkgcl.data import load_dataset

    ds = load_dataset(str(folder), benchmark_filename=["train", "test", "test"])
    split = ds.fixed_split
    train_pairs = set(zip(split.train.users.tolist(), split.train.items.tolist(), strict=True))
    answers: dict[int, set] = {}
    for u, i in zip(split.test.users.tolist(), split.test.items.tolist(), strict=True):
        answers.setdefault(u, set()).add(i)
    expected = _recall_at(10, weights["user_embedding.weight"].numpy(),
                          weights["item_embedding.weight"].numpy(), train_pairs, answers)
    assert result.test["Recall@10"] == pytest.approx(expected, abs=1e-9)
    # simkgcl evaluate recomputes the same
    assert evaluate_run(result.run_dir) == result.test
    assert main(["evaluate", str(result.run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result.test
