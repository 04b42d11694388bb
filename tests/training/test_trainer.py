"""Trainer: RecBole early stopping, loss bookkeeping, divergence, callbacks, checkpoints, runs."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from engine_fixtures import TINY_MODEL, TinyMF, make_tiny_data

import simkgcl.models as registry
from simkgcl.config import Config
from simkgcl.errors import ArtifactError
from simkgcl.graph import build_graph
from simkgcl.sampling import NegativeSampler
from simkgcl.training import Trainer, TrainingDiverged, build_optimizer
from simkgcl.training.checkpoint import (
    atomic_write_bytes,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from simkgcl.training.run import evaluate_run, train
from simkgcl.training.run_folder import RunFolder


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry._MODELS, TINY_MODEL, ("engine_fixtures", "TinyMF"))
    return TINY_MODEL


class ScriptedEvaluator:
    """Returns a fixed sequence of validation scores (to test the stopping rule alone)."""

    def __init__(self, scores: list[float]):
        self.scores = list(scores)
        self.calls = 0

    def evaluate(self, model, task) -> dict[str, float]:
        score = self.scores[self.calls]
        self.calls += 1
        return {"NDCG@20": score}


def _trainer(tiny_model: str, scores, tmp_path=None, callbacks=(), **overrides) -> Trainer:
    cfg = Config(model=tiny_model, show_progress=False, **overrides)
    ds, split = make_tiny_data()
    torch.manual_seed(0)
    model = TinyMF(build_graph(ds, split), cfg)
    sampler = NegativeSampler(split.train.users, split.train.items, ds.n_items, batch_size=64,
                              seed=cfg["seed"])
    return Trainer(model, cfg, sampler, ScriptedEvaluator(scores), valid_task=object(),
                   folder=RunFolder(tmp_path) if tmp_path else None, callbacks=callbacks)


def test_early_stopping_follows_recbole(tiny_model: str) -> None:
    # best 0.2 at epoch 1, tie at epoch 2 counts as improvement (>=); then 3 worse scores:
    # patience 1, 2, 3 > stopping_step 2 -> stop after epoch 5
    trainer = _trainer(tiny_model, [0.1, 0.2, 0.2, 0.1, 0.15, 0.19, 0.5], epochs=50,
                       stopping_step=2, stopping_warmup=0)
    state = trainer.fit()
    assert state.stopped_early
    assert state.epoch == 6
    assert state.best_epoch == 2
    assert state.best_score == 0.2
    assert state.patience == 3


def test_eval_step_validates_every_nth_epoch(tiny_model: str) -> None:
    records: list[dict] = []
    trainer = _trainer(tiny_model, [0.3, 0.2, 0.1], callbacks=[records.append], epochs=6,
                       eval_step=2, stopping_step=5)
    trainer.fit()
    assert [r["valid_score"] is not None for r in records] == [False, True] * 3
    assert trainer.state.best_epoch == 1


def test_smaller_is_better_metric(tiny_model: str) -> None:
    trainer = _trainer(tiny_model, [0.5, 0.3, 0.4, 0.4], epochs=4, stopping_step=5,
                       valid_metric_bigger=False)
    assert trainer.fit().best_epoch == 1


def test_callback_can_stop_and_can_abort(tiny_model: str) -> None:
    trainer = _trainer(tiny_model, [0.1] * 10, callbacks=[lambda r: r["epoch"] == 2], epochs=10,
                       stopping_step=50)
    state = trainer.fit()
    assert state.epoch == 3 and not state.stopped_early

    class Pruned(Exception):
        pass

    def prune(record):
        if record["epoch"] == 1:
            raise Pruned

    with pytest.raises(Pruned):
        _trainer(tiny_model, [0.1] * 10, callbacks=[prune], epochs=10).fit()


def test_each_loss_term_is_summed_by_name(tiny_model: str) -> None:
    trainer = _trainer(tiny_model, [0.1], epochs=1)
    losses = trainer.train_epoch(0)
    assert set(losses) == {"bpr", "aux"}
    assert losses["aux"] == 0.0
    # sum over the epoch's batches: each batch's bpr is ~log 2 at initialisation
    assert losses["bpr"] == pytest.approx(np.log(2) * len(trainer.sampler.epoch(0)), rel=0.1)


def test_nan_loss_stops_with_epoch_and_term(tiny_model: str) -> None:
    trainer = _trainer(tiny_model, [0.1] * 5, epochs=5, poison_after=6)  # 4 batches per epoch
    with pytest.raises(TrainingDiverged, match=r"epoch 1: loss term 'aux' is nan"):
        trainer.fit()


@pytest.mark.parametrize("learner", ["adam", "adamw", "sgd", "adagrad", "rmsprop"])
def test_every_learner_decreases_the_loss(learner: str, tiny_model: str) -> None:
    lr = 0.5 if learner in ("sgd", "adagrad") else 0.05
    trainer = _trainer(tiny_model, [0.1] * 8, epochs=8, learner=learner, learning_rate=lr,
                       dropout=0.0)
    first = trainer.train_epoch(0)["bpr"]
    for e in range(1, 8):
        last = trainer.train_epoch(e)["bpr"]
    assert last < first


def test_gradient_clipping_bounds_the_update(tiny_model: str) -> None:
    # with SGD and lr 1, one step moves the parameters by exactly the (clipped) gradient
    trainer = _trainer(tiny_model, [0.1], epochs=1, learner="sgd", learning_rate=1.0,
                       clip_grad_norm={"max_norm": 1e-3}, train_batch_size=10**6, dropout=0.0)
    trainer.sampler.batch_size = 10**6  # one batch: one step
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.train_epoch(0)
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(1e-3, rel=1e-3)


def test_weight_decay_reaches_the_optimizer() -> None:
    opt = build_optimizer("adam", [torch.nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.3)
    assert opt.param_groups[0]["weight_decay"] == 0.3


def test_checkpoints_are_plain_data(tiny_model: str, tmp_path) -> None:
    trainer = _trainer(tiny_model, [0.1, 0.3, 0.2], tmp_path=tmp_path, epochs=3)
    trainer.fit()
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert last["state"]["epoch"] == 3 and last["state"]["best_epoch"] == 1
    assert set(last["rng"]) >= {"python", "numpy", "torch"}
    assert "state" in last["optimizer"]
    assert best["epoch"] == 1 and best["score"] == 0.3
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    atomic_write_bytes(target, b"old")

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new and longer")
    assert target.read_bytes() == b"old"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_checkpoint(tmp_path / "last.pt")


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_train_writes_a_complete_run_folder(tiny_model: str, tmp_path) -> None:
    data = make_tiny_data()
    cfg = Config(model=tiny_model, epochs=4, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu",
                 metrics=["Recall", "NDCG", "ItemCoverage"])
    result = train(cfg, data=data)
    run = result.run_dir
    assert run.parent == tmp_path and run.name.startswith(f"{tiny_model}-tiny-")
    for name in ("config.yaml", "train.log", "metrics.jsonl", "results.json",
                 "checkpoints/best.pt", "checkpoints/last.pt", "artifact/meta.json"):
        assert (run / name).is_file(), name
    assert Config.load(run / "config.yaml").to_dict() == cfg.to_dict()
    assert len(result.history) == 4
    assert set(result.history[0]["losses"]) == {"bpr", "aux"}
    results = json.loads((run / "results.json").read_text())
    assert results["test"] == result.test
    assert results["best_epoch"] == result.best_epoch
    assert result.best_valid == result.history[result.best_epoch]["valid"]
    assert "ItemCoverage@10" in result.test
    log = (run / "train.log").read_text()
    assert "resolved config" in log and "learning_rate = 0.001" in log
    # the best checkpoint, reloaded with the saved config, gives exactly the test metrics
    assert evaluate_run(run, data=data) == result.test
    assert evaluate_run(run, split="valid", data=data) == result.best_valid


def test_default_stopping_warmup_waits_for_slow_starters(tiny_model: str) -> None:
    # flat for the first 20 epochs, then better: the default warm-up keeps the run alive
    scores = [0.3] + [0.1] * 20 + [0.4] + [0.1] * 40
    state = _trainer(tiny_model, scores, epochs=len(scores), stopping_step=2).fit()
    assert state.best_epoch == 21 and state.best_score == 0.4


def test_stopping_warmup_delays_patience_but_keeps_improvements(tiny_model: str) -> None:
    # a slow starter: flat (and worse than epoch 0) for 4 epochs, then it learns
    scores = [0.3, 0.1, 0.1, 0.1, 0.1, 0.4, 0.5, 0.5, 0.2, 0.2, 0.2]
    seed_rule = _trainer(tiny_model, scores, epochs=11, stopping_step=2, stopping_warmup=0).fit()
    assert seed_rule.stopped_early and seed_rule.epoch == 4 and seed_rule.best_score == 0.3

    waited = _trainer(tiny_model, scores, epochs=11, stopping_step=2, stopping_warmup=5).fit()
    assert waited.best_epoch == 7 and waited.best_score == 0.5
    # patience counts only from epoch 5 on: 0.2, 0.2, 0.2 after the best -> stop after epoch 10
    assert waited.stopped_early and waited.epoch == 11 and waited.stop_reason == "early stop"

    # a best found during the warmup still resets patience after it
    early_best = _trainer(tiny_model, [0.1, 0.9, 0.2, 0.2, 0.2, 0.2], epochs=6,
                          stopping_step=1, stopping_warmup=3).fit()
    assert early_best.best_epoch == 1 and early_best.epoch == 5  # patience 1, 2 at epochs 3, 4


def test_time_budget_stops_after_the_epoch_that_crosses_it(tiny_model: str) -> None:
    # each epoch of 4 batches sleeps 4 * 0.03 s, so a 0.3 s budget lasts a few epochs
    spent: list[float] = []

    def clock(record) -> None:
        spent.append(record["train_seconds"] + (record["valid_seconds"] or 0.0))

    state = _trainer(tiny_model, [0.1] * 20, callbacks=[clock], epochs=20, stopping_step=50,
                     time_budget=0.3, batch_delay=0.03).fit()
    assert state.stop_reason == "time budget" and not state.stopped_early
    assert 1 <= state.epoch < 20 and len(spent) == state.epoch
    # every epoch but the last started within the budget; the last one crossed it
    assert sum(spent[:-1]) < 0.3 <= sum(spent) == pytest.approx(
        state.train_seconds + state.valid_seconds)


def test_callbacks_see_the_epoch_already_on_disk(tiny_model: str, tmp_path) -> None:
    seen: list[tuple[int, int]] = []

    def look(record) -> bool:
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
        seen.append((len(lines), last["state"]["epoch"]))
        return record["epoch"] == 1

    state = _trainer(tiny_model, [0.1] * 5, tmp_path=tmp_path, callbacks=[look], epochs=5).fit()
    assert seen == [(1, 1), (2, 2)]
    assert state.stop_reason == "callback"
    # the folder records the stop, so a resume does not silently carry on
    assert torch.load(tmp_path / "checkpoints" / "last.pt",
                      weights_only=True)["state"]["finished"]


def test_time_budget_run_tests_the_best_model_and_resumes_with_more_time(
        tiny_model: str, tmp_path) -> None:
    from simkgcl.training.run import resume_run

    data = make_tiny_data()
    cfg = Config(model=tiny_model, epochs=30, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu", stopping_step=100,
                 time_budget=0.15, batch_delay=0.03)
    result = train(cfg, data=data)
    assert result.stop_reason == "time budget" and 1 <= result.epochs_run < 30
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["stop_reason"] == "time budget" and results["test"] == result.test
    assert evaluate_run(result.run_dir, data=data) == result.test
    more = resume_run(result.run_dir, {"time_budget": 0.5}, data=data)
    assert more.epochs_run > result.epochs_run


def test_evaluate_test_false_leaves_the_test_split_alone(tiny_model: str, tmp_path) -> None:
    data = make_tiny_data()
    cfg = Config(model=tiny_model, epochs=2, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu")
    result = train(cfg, data=data, evaluate_test=False)
    assert result.test == {} and result.best_valid
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["test"] is None
    # the best checkpoint is still there for a later evaluate_run
    assert set(evaluate_run(result.run_dir, data=data)) == set(result.best_valid)


def test_threads_applies_during_the_run_only(tiny_model: str, tmp_path) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    cfg = Config(model=tiny_model, epochs=1, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu", threads=before + 1)
    train(cfg, data=make_tiny_data(), callbacks=[lambda r: seen.append(torch.get_num_threads())])
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_fused_adam_is_used_and_trains_like_the_plain_one(tiny_model: str) -> None:
    fused = _trainer(tiny_model, [0.1] * 3, epochs=3, learning_rate=0.05)
    plain = _trainer(tiny_model, [0.1] * 3, epochs=3, learning_rate=0.05, fused_optimizer=False)
    assert fused.optimizer.param_groups[0]["fused"] is True
    assert not plain.optimizer.param_groups[0]["fused"]
    for epoch in range(3):
        torch.manual_seed(epoch)  # same dropout masks for both
        a = fused.train_epoch(epoch)
        torch.manual_seed(epoch)
        b = plain.train_epoch(epoch)
        assert a["bpr"] == pytest.approx(b["bpr"], rel=1e-5)
    for p, q in zip(fused.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    # other learners ignore the key
    sgd = _trainer(tiny_model, [0.1], epochs=1, learner="sgd", learning_rate=0.1)
    assert isinstance(sgd.optimizer, torch.optim.SGD)


def test_models_get_a_per_epoch_stream_that_depends_on_seed_and_epoch_only(
        tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a model draws in on_epoch_start (SGL's augmented graphs) must not depend on the
    global RNG state: a resumed run and every DDP rank draw the same."""
    draws: list[tuple[int, list[float]]] = []

    def record(self, epoch: int, generator: torch.Generator) -> None:
        draws.append((epoch, torch.rand(4, generator=generator).tolist()))

    monkeypatch.setattr(TinyMF, "on_epoch_start", record)
    _trainer(tiny_model, [0.1, 0.2, 0.3], epochs=3).fit()
    first = list(draws)
    draws.clear()
    torch.manual_seed(12345)  # a different global state changes nothing
    trainer = _trainer(tiny_model, [0.1, 0.2, 0.3], epochs=3)
    trainer.state.epoch = 1  # as after a resume
    trainer.fit()
    assert [e for e, _ in first] == [0, 1, 2]
    assert draws == first[1:]
    assert first[0][1] != first[1][1]
    draws.clear()
    _trainer(tiny_model, [0.1, 0.2, 0.3], epochs=1, seed=7).fit()
    assert draws[0][1] != first[0][1]


def test_extra_steps_run_as_optimiser_steps_of_their_own_before_the_batches(
        tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's extra steps (KGCL's TransE batches) run after on_epoch_start and before the
    epoch's batches, each one optimiser step on its own loss; their terms are logged."""
    events: list[str] = []
    forward = TinyMF.forward

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        events.append(f"start {epoch}")

    def extra_steps(self):
        def step(k: int):
            events.append(f"extra {k}")
            # pull item 0's row towards 1.0 (a loss the batches never see)
            return {"pull": (self.items.weight[0] - 1.0).pow(2).sum()}
        return [lambda k=k: step(k) for k in range(3)]

    def spy_forward(self, *args):
        events.append("batch")
        return forward(self, *args)

    monkeypatch.setattr(TinyMF, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(TinyMF, "extra_steps", extra_steps)
    monkeypatch.setattr(TinyMF, "forward", spy_forward)
    trainer = _trainer(tiny_model, [0.1], epochs=1, learner="sgd", learning_rate=0.1)
    start = trainer.model.items.weight[0].detach().clone()
    expected = start.clone()
    for _ in range(3):  # plain SGD on (x - 1)^2: x <- x - 0.1 * 2 (x - 1), three times
        expected = expected - 0.2 * (expected - 1.0)
    losses = trainer.train_epoch(0)
    first_batch = events.index("batch")
    assert events[:first_batch] == ["start 0", "extra 0", "extra 1", "extra 2"]
    assert "extra" not in " ".join(events[first_batch:])
    assert losses.keys() == {"bpr", "aux", "pull"}
    want = sum(float((x - 1.0).pow(2).sum()) for x in (
        start, start - 0.2 * (start - 1.0), start - 0.36 * (start - 1.0)))
    assert losses["pull"] == pytest.approx(want, rel=1e-5)
    # stopped at the first batch: item 0 has moved by exactly the three extra steps
    class FirstBatch(Exception):
        pass

    def stop(self, *args):
        raise FirstBatch

    trainer = _trainer(tiny_model, [0.1], epochs=1, learner="sgd", learning_rate=0.1)
    monkeypatch.setattr(TinyMF, "forward", stop)
    with pytest.raises(FirstBatch):
        trainer.train_epoch(0)
    assert torch.allclose(trainer.model.items.weight[0], expected, atol=1e-6)
    assert not torch.allclose(start, expected, atol=1e-3)
