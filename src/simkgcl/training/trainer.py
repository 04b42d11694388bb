"""The training loop: epochs of sampled batches, validation, early stopping, checkpoints.

Early stopping follows RecBole: after every ``eval_step`` epochs the model is validated; a score
at least as good as the best so far (``>=`` when bigger is better) becomes the new best and resets
the patience counter, any other score increments it, and training stops once the counter exceeds
``stopping_step``. Everything the loop needs to continue exactly (model, optimiser, epoch, best
score, patience, random states) is in ``checkpoints/last.pt`` after every epoch.

Hooks for what is built on top (hyper-parameter search, time budgets): every callback is called
with the epoch's record after each epoch; it may return ``True`` to stop training gracefully (the
best model is still tested) or raise (e.g. ``optuna.TrialPruned``) to abandon the run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from simkgcl.errors import SimKGCLError
from simkgcl.evaluation.evaluator import Evaluator, RankingTask
from simkgcl.models.base import Recommender
from simkgcl.sampling.negative import NegativeSampler
from simkgcl.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

logger = logging.getLogger("simkgcl.training")

EpochCallback = Callable[[dict[str, Any]], "bool | None"]


class TrainingDiverged(SimKGCLError):
    """A loss term became NaN or infinite."""


@dataclass
class TrainState:
    """Progress of a run: everything besides weights and random states needed to resume."""

    epoch: int = 0  # next epoch to run (0-based)
    best_score: float | None = None
    best_epoch: int = -1
    patience: int = 0  # validations since the last improvement (RecBole's cur_step)
    best_valid: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    finished: bool = False
    train_seconds: float = 0.0
    valid_seconds: float = 0.0
    n_validations: int = 0


def build_optimizer(name: str, params, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser the config's ``learner`` names."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown learner {name!r}")


def format_losses(losses: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in losses.items())


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class Trainer:
    """Trains ``model`` on ``sampler``'s epochs and validates it on ``valid_task``.

    ``run_dir`` (None: write nothing) receives ``metrics.jsonl`` and ``checkpoints/``.
    ``train_module`` is what computes the loss (a DDP wrapper of ``model``); it defaults to the
    model itself. Only ``write_files=True`` processes (rank 0) write.
    """

    def __init__(
        self,
        model: Recommender,
        config: Mapping[str, Any],
        sampler: NegativeSampler,
        evaluator: Evaluator,
        valid_task: RankingTask | None,
        *,
        run_dir: str | Path | None = None,
        callbacks: Sequence[EpochCallback] = (),
        train_module: nn.Module | None = None,
        write_files: bool = True,
        tensorboard: Any = None,
    ) -> None:
        self.model = model
        self.train_module = train_module if train_module is not None else model
        self.config = config
        self.sampler = sampler
        self.evaluator = evaluator
        self.valid_task = valid_task
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.write_files = write_files and self.run_dir is not None
        self.tensorboard = tensorboard
        self.optimizer = build_optimizer(config["learner"], model.parameters(),
                                         lr=config["learning_rate"],
                                         weight_decay=config["weight_decay"])
        self.clip = config["clip_grad_norm"]
        self.valid_metric = config["valid_metric"]
        self.bigger = bool(config["valid_metric_bigger"])
        self.state = TrainState()
        if self.write_files:
            assert self.run_dir is not None
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def metrics_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "metrics.jsonl"

    # -- one epoch ------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run one epoch; return the sum of each named loss term over its batches."""
        self.train_module.train()
        batches = self.sampler.epoch(epoch)
        totals: dict[str, torch.Tensor] = {}
        bar = tqdm(batches, desc=f"epoch {epoch}", total=len(batches), leave=False,
                   disable=not self.config["show_progress"], dynamic_ncols=True)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for users, pos, neg in bar:
            self.optimizer.zero_grad(set_to_none=True)
            terms = self.train_module(users, pos, neg)
            loss = sum(terms.values())
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            if self.clip:
                nn.utils.clip_grad_norm_(params, **self.clip)
            self.optimizer.step()
            for name, value in terms.items():
                d = value.detach()
                totals[name] = totals[name] + d if name in totals else d.clone()
        # One host sync per epoch, not per batch.
        losses = {name: float(v) for name, v in totals.items()}
        for name, value in losses.items():
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: loss term {name!r} is {value} "
                    f"(losses this epoch: {format_losses(losses)}); try a smaller learning_rate, "
                    "gradient clipping (clip_grad_norm={max_norm: 5}) or another seed"
                )
        return losses

    def validate(self) -> dict[str, float]:
        assert self.valid_task is not None
        return self.evaluator.evaluate(self.model, self.valid_task)

    # -- early stopping -------------------------------------------------------------------------

    def _improved(self, score: float) -> bool:
        best = self.state.best_score
        if best is None:
            return not math.isnan(score)
        return score >= best if self.bigger else score <= best

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> TrainState:
        """Train from ``self.state.epoch`` until ``epochs`` or early stopping."""
        cfg = self.config
        st = self.state
        epochs, eval_step, stopping_step = cfg["epochs"], cfg["eval_step"], cfg["stopping_step"]
        while st.epoch < epochs and not st.finished:
            epoch = st.epoch
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            train_s = time.perf_counter() - t0
            st.train_seconds += train_s
            record: dict[str, Any] = {"epoch": epoch, "losses": losses,
                                      "loss": sum(losses.values()), "train_seconds": train_s,
                                      "valid": None, "valid_seconds": None, "valid_score": None}
            improved = False
            stop = False
            if eval_step > 0 and (epoch + 1) % eval_step == 0 and self.valid_task is not None:
                t1 = time.perf_counter()
                valid = self.validate()
                valid_s = time.perf_counter() - t1
                st.valid_seconds += valid_s
                st.n_validations += 1
                score = valid[self.valid_metric]
                record.update(valid=valid, valid_seconds=valid_s, valid_score=score)
                if self._improved(score):
                    st.best_score, st.best_epoch, st.best_valid = score, epoch, dict(valid)
                    st.patience = 0
                    improved = True
                else:
                    st.patience += 1
                    if st.patience > stopping_step:
                        stop = st.stopped_early = True
            elif eval_step <= 0:
                # Without validation the latest model is the one kept.
                st.best_epoch, improved = epoch, True
            record.update(best_epoch=st.best_epoch, best_score=st.best_score,
                          patience=st.patience, improved=improved)
            self._log_epoch(record)
            st.epoch = epoch + 1
            if improved and self.write_files:
                save_checkpoint(self.best_path, {
                    "model": self.model.state_dict(), "epoch": epoch,
                    "score": st.best_score, "valid": st.best_valid,
                })
            for callback in self.callbacks:
                if callback(record):
                    stop = True
                    logger.info("a callback asked to stop after epoch %d", epoch)
            if stop or st.epoch >= epochs:
                st.finished = True
            if self.write_files:
                with open(self.metrics_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                    fh.flush()
                self.save_last()
            if stop:
                if st.stopped_early:
                    logger.info("early stop after epoch %d: no improvement of %s in %d "
                                "validations; best epoch %d (%s = %.4f)", epoch,
                                self.valid_metric, st.patience, st.best_epoch,
                                self.valid_metric, st.best_score)
                break
        st.finished = True
        return st

    def _log_epoch(self, record: dict[str, Any]) -> None:
        msg = (f"epoch {record['epoch']} train {record['train_seconds']:.2f}s "
               f"{format_losses(record['losses'])}")
        if record["valid"] is not None:
            msg += (f" | valid {record['valid_seconds']:.2f}s {format_metrics(record['valid'])}"
                    + (" *best*" if record["improved"] else f" (patience {record['patience']})"))
        logger.info(msg)
        tb = self.tensorboard
        if tb is not None:
            for name, value in record["losses"].items():
                tb.add_scalar(f"loss/{name}", value, record["epoch"])
            for name, value in (record["valid"] or {}).items():
                tb.add_scalar(f"valid/{name}", value, record["epoch"])

    # -- checkpoints ----------------------------------------------------------------------------

    def save_last(self) -> None:
        save_checkpoint(self.last_path, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "rng": capture_rng_state(),
        })

    def load_last(self, path: str | Path | None = None) -> None:
        """Restore model, optimiser, progress and random states from a ``last.pt``."""
        ckpt = load_checkpoint(path or self.last_path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**ckpt["state"])
        restore_rng_state(ckpt["rng"])

    def load_best(self) -> dict[str, Any]:
        """Load the best weights into the model (for testing); returns the checkpoint."""
        ckpt = load_checkpoint(self.best_path)
        self.model.load_state_dict(ckpt["model"])
        return ckpt
