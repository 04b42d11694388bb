"""Data-parallel training: ``torchrun`` with 2 CPU processes (gloo) on the bundled dataset.

What is equivalent: a rank trains on its part of each optimiser step's rows, so 2 ranks with
``train_batch_size=B`` see, step by step, exactly the rows one process sees with ``2 * B``
(same seed -> same shuffled epoch and negatives). DDP averages the ranks' gradients and the
trainer weights each rank's batch-mean loss by its share of the step's rows, so the update is
the gradient of the one big batch's mean: the same maths as the single process. Only the order
of float additions differs (about 1e-7 relative in each gradient). The tolerance on a test
metric is 1e-3, about one test user's Recall@10 on this dataset (1/1.8k users): enough for a
rounding-level difference to swap two near-tied items for a user, far too small to hide a real
difference. The learner is plain SGD because its step is proportional to the gradient: with Adam
(invariant to the gradient's scale) a wrong loss weight would go unnoticed; here doubling it
moves test Recall@20 by 0.02.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simkgcl.config import Config
from simkgcl.training.run import train

WORLD = 2
PER_RANK_BATCH = 1024
SETTINGS = ["epochs=4", "embedding_size=16", "learner=sgd", "learning_rate=300",
            "show_progress=false", "device=cpu", "threads=1", "topk=[10,20]",
            "valid_metric=NDCG@20"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess,
                                                                Path]:
    runs = tmp_path_factory.mktemp("ddp") / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
           f"--master_port={_free_port()}", "-m", "simkgcl", "train", "--model", "bpr", "--json",
           *SETTINGS, f"train_batch_size={PER_RANK_BATCH}", f"checkpoint_dir={runs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, runs


def test_two_processes_write_one_run_folder_with_the_results(ddp_run) -> None:
    proc, runs = ddp_run
    folders = list(runs.iterdir())
    assert len(folders) == 1, folders
    run = folders[0]
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == WORLD and results["epochs_run"] == 4
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "artifact").is_dir()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    # only rank 0 reports: exactly one JSON document on stdout, and each epoch logged once
    printed = json.loads(proc.stdout)
    assert printed["run_dir"] == str(run) and printed["test"] == results["test"]
    assert proc.stderr.count("INFO epoch 3 ") == 1


def test_metrics_match_one_process_with_the_global_batch(ddp_run, tmp_path: Path) -> None:
    _, runs = ddp_run
    run = next(runs.iterdir())
    ddp_results = json.loads((run / "results.json").read_text())
    single = train(Config(model="bpr", checkpoint_dir=str(tmp_path), overrides=[
        *SETTINGS, f"train_batch_size={WORLD * PER_RANK_BATCH}"]))
    assert single.test.keys() == ddp_results["test"].keys()
    for name, value in single.test.items():
        assert ddp_results["test"][name] == pytest.approx(value, abs=1e-3), name
    assert single.best_epoch == ddp_results["best_epoch"]
    # the logged epoch losses are the global batch's, equal up to float rounding
    ddp_losses = [json.loads(line)["loss"]
                  for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ddp_losses == pytest.approx([r["loss"] for r in single.history], rel=1e-5)
    # and the model did learn (so agreement is not that of two untrained models)
    assert single.test["Recall@20"] > 0.05


def test_the_per_user_file_holds_every_test_user_not_one_ranks_share(ddp_run) -> None:
    import numpy as np

    _, runs = ddp_run
    run = next(runs.iterdir())
    results = json.loads((run / "results.json").read_text())
    with np.load(run / "test_per_user.npz", allow_pickle=False) as raw:
        users = raw["user"].tolist()
        means = {m: float(raw[m].mean()) for m in raw["metrics"]}
    assert len(users) == len(set(users)) == sum(r["n_users"]
                                                for r in results["test_groups"]["edges"])
    assert means == pytest.approx(results["test"], rel=1e-9)
    assert len(users) > 1500  # lastfm-kg's ~1.9k test users, from both ranks
