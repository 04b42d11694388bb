"""Data-parallel training: ``torchrun`` with 2 CPU processes (gloo) on the bundled dataset.

BPR (loss a batch *mean*): a rank trains on its part of each optimiser step's rows, so 2 ranks
with ``train_batch_size=B`` see, step by step, exactly the rows one process sees with ``2 * B``
(same seed -> same shuffled epoch and negatives). DDP averages the ranks' gradients and the
trainer weights each rank's batch-mean loss by its share of the step's rows, so the update is
the gradient of the one big batch's mean: the same maths as the single process. Only the order
of float additions differs (about 1e-7 relative in each gradient). The tolerance on a test
metric is 1e-3, about one test user's Recall@10 on this dataset (1/1.8k users): enough for a
rounding-level difference to swap two near-tied items for a user, far too small to hide a real
difference. The learner is plain SGD because its step is proportional to the gradient: with Adam
(invariant to the gradient's scale) a wrong loss weight would go unnoticed; here doubling it
moves test Recall@20 by 0.02.

SimKGCL (loss coupled over the batch: InfoNCE between the step's unique users and items, the
norm of the whole batch): every rank computes the whole step (``loss_reduction = "batch"``).
What could legitimately differ from one process, and does not here:

* dropout draws (triple dropout, 16-bit user-item masks, message dropout) come from the torch
  generator, seeded alike on every rank and drawn in the same order with the same shapes, so
  each rank draws exactly the single process's masks;
* InfoNCE negatives are the other rows of the step, which every rank holds whole.

DDP then averages equal gradients, ``(g + g) / 2 == g`` exactly in floating point, so the two
runs agree bit for bit: losses, validation metrics of every epoch and test metrics are compared
exactly, with dropout on. (When the ranks each contrasted only their half of the batch, epoch-0
validation NDCG@20 was 0.0166 instead of 0.0247 on lastfm-kg.)

Ports: ``--standalone`` lets torchrun pick a free port for its rendezvous itself (no
bind-then-release race between choosing a port and using it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simkgcl.config import Config
from simkgcl.training.run import train
from simkgcl.training.run_folder import RunFolder

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).parent
WORLD = 2
PER_RANK_BATCH = 1024
SETTINGS = ["epochs=4", "embedding_size=16", "learner=sgd", "learning_rate=300",
            "show_progress=false", "device=cpu", "threads=1", "topk=[10,20]",
            "valid_metric=NDCG@20"]
# SimKGCL with its own dropout on (rates as the seed's), Adam as the seed trains it
SIMKGCL_SETTINGS = ["epochs=3", "embedding_size=16", "show_progress=false", "device=cpu",
                    "threads=1", "topk=[10,20]", "valid_metric=NDCG@20", "learning_rate=0.01"]


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=WORLD ARGS`` on CPU threads of one each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={WORLD}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent / "training"),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _train_under_torchrun(runs: Path, model: str, settings: list[str]) -> tuple[
        subprocess.CompletedProcess, Path]:
    proc = torchrun("-m", "simkgcl", "train", "--model", model, "--json", *settings,
                    f"train_batch_size={PER_RANK_BATCH}", f"checkpoint_dir={runs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = list(runs.iterdir())
    assert len(folders) == 1, folders
    return proc, folders[0]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess,
                                                                Path]:
    return _train_under_torchrun(tmp_path_factory.mktemp("ddp") / "runs", "bpr", SETTINGS)


def test_two_processes_write_one_run_folder_with_the_results(ddp_run) -> None:
    proc, run = ddp_run
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == WORLD and results["epochs_run"] == 4
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "artifact").is_dir()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    # only rank 0 reports: exactly one JSON document on stdout, and each epoch logged once
    printed = json.loads(proc.stdout)
    assert printed["run_dir"] == str(run) and printed["test"] == results["test"]
    assert proc.stderr.count("INFO epoch 3 ") == 1


def test_metrics_match_one_process_with_the_global_batch(ddp_run, tmp_path: Path) -> None:
    _, run = ddp_run
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

    _, run = ddp_run
    results = json.loads((run / "results.json").read_text())
    with np.load(run / "test_per_user.npz", allow_pickle=False) as raw:
        users = raw["user"].tolist()
        means = {m: float(raw[m].mean()) for m in raw["metrics"]}
    assert len(users) == len(set(users)) == sum(r["n_users"]
                                                for r in results["test_groups"]["edges"])
    assert means == pytest.approx(results["test"], rel=1e-9)
    assert len(users) > 1500  # lastfm-kg's ~1.9k test users, from both ranks


def test_simkgcl_under_two_processes_trains_exactly_like_one(tmp_path: Path) -> None:
    _, run = _train_under_torchrun(tmp_path / "ddp", "simkgcl", SIMKGCL_SETTINGS)
    single = train(Config(model="simkgcl", checkpoint_dir=str(tmp_path / "single"), overrides=[
        *SIMKGCL_SETTINGS, f"train_batch_size={WORLD * PER_RANK_BATCH}"]))
    ddp_history = RunFolder(run).read_history()
    assert len(ddp_history) == len(single.history) == 3
    for ddp_epoch, one_epoch in zip(ddp_history, single.history, strict=True):
        assert ddp_epoch["losses"] == one_epoch["losses"], ddp_epoch["epoch"]
        # validation means are per-rank sums all-reduced, the single process's one running sum:
        # the same per-user values added in another order, so last-bit differences (as KGAT's)
        assert ddp_epoch["valid"] == pytest.approx(one_epoch["valid"], rel=1e-12, abs=0)
    ddp_results = RunFolder(run).read_results()
    single_results = RunFolder(single.run_dir).read_results()
    assert ddp_results["world_size"] == WORLD
    # the popularity blend fitted on validation is the single process's exactly; the test means
    # (blended and the model alone) are sums of the same per-user values in another order (per
    # rank, then all-reduced), equal up to float rounding
    assert ddp_results["popularity_blend"] == single_results["popularity_blend"]
    assert ddp_results["test_unblended"] == pytest.approx(single_results["test_unblended"],
                                                          rel=1e-12, abs=0)
    assert ddp_results["test"] == pytest.approx(single.test, rel=1e-12, abs=0)
    # dropout was on, and the model learned: validation NDCG@20 rose over the epochs
    assert single.history[-1]["valid"]["NDCG@20"] > single.history[0]["valid"]["NDCG@20"]


def test_kgat_under_two_processes_trains_like_one(tmp_path: Path) -> None:
    """KGAT's TransR tables are trained by its extra steps only, on every rank alike: kept out
    of DDP, they must neither break the all-reduce nor drift; the TransR batch is the step's."""
    settings = [*SIMKGCL_SETTINGS, "kg_embedding_size=8", "layers=[16]"]
    _, run = _train_under_torchrun(tmp_path / "ddp", "kgat", settings)
    single = train(Config(model="kgat", checkpoint_dir=str(tmp_path / "single"), overrides=[
        *settings, f"train_batch_size={WORLD * PER_RANK_BATCH}"]))
    ddp_history = RunFolder(run).read_history()
    assert [set(e["losses"]) for e in ddp_history] == [{"bpr", "reg"}] + 2 * [
        {"bpr", "reg", "kg", "kg_reg"}]
    for ddp_epoch, one_epoch in zip(ddp_history, single.history, strict=True):
        assert ddp_epoch["losses"] == one_epoch["losses"], ddp_epoch["epoch"]
        # the evaluator's per-rank users sum in another order: last-bit differences
        assert ddp_epoch["valid"] == pytest.approx(one_epoch["valid"], rel=1e-12, abs=0)


def test_an_error_on_one_rank_ends_the_job_without_hanging(tmp_path: Path) -> None:
    # rank 1 raises in its epoch-1 callback while rank 0 goes on into the next epoch's
    # collectives: the job must fail promptly (not wait for a peer forever)
    proc = torchrun(str(HERE / "failing_rank_script.py"), str(tmp_path), timeout=120)
    assert proc.returncode != 0
    assert "rank 1 gives up after epoch 1" in proc.stderr
