"""The training loop: epochs of sampled batches, validation, early stopping, checkpoints.

Early stopping follows RecBole: after every ``eval_step`` epochs the model is validated; a score
at least as good as the best so far (``>=`` when bigger is better) becomes the new best and resets
the patience counter, any other score increments it, and training stops once the counter exceeds
``stopping_step``. During the first ``stopping_warmup`` epochs a validation can set a new best
but never counts against patience, so a slow starter is not stopped on its flat first stretch
(0, the default, is RecBole's rule). ``time_budget`` (seconds of training and validation, summed
over resumed sessions) ends training gracefully after the epoch that crosses it; the best model is
still tested. Everything the loop needs to continue exactly (model, optimiser, epoch, best score,
patience, random states) is in ``checkpoints/last.pt`` after every epoch.

A model without trainable parameters (``pop``) runs no epoch: :meth:`Trainer.fit` validates it
once, saves it as the best and last model and finishes (no optimiser exists; ``last.pt`` holds an
empty optimiser state).

Hooks for what is built on top (hyper-parameter search): every callback is called with the
epoch's record after each epoch, once ``metrics.jsonl`` and ``last.pt`` hold that epoch; it may
return ``True`` to stop training gracefully (the best model is still tested) or raise (e.g.
``optuna.TrialPruned``) to abandon the run.

Under DDP (``train_module`` a DistributedDataParallel wrapper) DDP averages the ranks'
gradients; each rank's loss is scaled so that the average is the gradient of the step's one big
batch, according to the model's ``loss_reduction`` (see :mod:`simkgcl.training.components`):

* ``"mean"`` (the default): a rank holds a ``share`` of the step's rows; its loss is scaled by
  ``world_size * share``;
* ``"sum"``: a rank's rows; scaled by ``world_size``;
* ``"batch"``: every rank holds the whole step and computes the same loss; not scaled.

Logged losses are each step's global value (for "mean"/"sum" the ranks' parts summed), identical
on every rank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from simkgcl.errors import ArtifactError, SimKGCLError
from simkgcl.evaluation.evaluator import Evaluator, RankingTask
from simkgcl.models.base import Recommender
from simkgcl.sampling.negative import MODEL_EPOCH_STREAM, EpochSource, epoch_generator
from simkgcl.training.checkpoint import (
    capture_rng_state,
    load_model_weights,
    require_entries,
    restore_rng_state,
)
from simkgcl.training.components import loss_reduction
from simkgcl.training.distributed import any_rank
from simkgcl.training.optim import autocast_context, build_optimizer, fused_adam_ok
from simkgcl.training.run_folder import RunFolder

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
    stop_reason: str = ""  # "", "early stop", "time budget", "callback"


def format_losses(losses: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in losses.items())


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class Trainer:
    """Trains ``model`` on ``sampler``'s epochs and validates it on ``valid_task``.

    ``folder`` (None: write nothing; DDP ranks other than 0) receives ``metrics.jsonl`` and the
    checkpoints. ``train_module`` is what computes the loss (a DDP wrapper of ``model``); it
    defaults to the model itself.
    """

    def __init__(
        self,
        model: Recommender,
        config: Mapping[str, Any],
        sampler: EpochSource,
        evaluator: Evaluator,
        valid_task: RankingTask | None,
        *,
        folder: RunFolder | None = None,
        callbacks: Sequence[EpochCallback] = (),
        train_module: nn.Module | None = None,
        tensorboard: Any = None,
    ) -> None:
        self.model = model
        self.train_module = train_module if train_module is not None else model
        self.config = config
        self.sampler = sampler
        self.evaluator = evaluator
        self.valid_task = valid_task
        self.callbacks = list(callbacks)
        self.folder = folder
        self.tensorboard = tensorboard
        # A model without trainable parameters (pop) runs no epochs: see fit().
        self.trainable = any(p.requires_grad for p in model.parameters())
        self.optimizer = (build_optimizer(config["learner"], model.parameters(),
                                          lr=config["learning_rate"],
                                          weight_decay=config["weight_decay"],
                                          fused=fused_adam_ok(config, model))
                          if self.trainable else None)
        self.clip = config["clip_grad_norm"]
        self.autocast = autocast_context(config.get("mixed_precision", "none"), model)
        self.valid_metric = config["valid_metric"]
        self.bigger = bool(config["valid_metric_bigger"])
        self.state = TrainState()
        self.world_size = (torch.distributed.get_world_size()
                           if isinstance(self.train_module, nn.parallel.DistributedDataParallel)
                           else 1)
        self.main_process = self.world_size == 1 or torch.distributed.get_rank() == 0
        self.loss_reduction = loss_reduction(model)

    # -- one epoch ------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run one epoch; return the sum of each named loss term over its batches."""
        self.train_module.train()
        self.model.on_epoch_start(epoch, epoch_generator(self.config["seed"], epoch,
                                                         MODEL_EPOCH_STREAM))
        extra = self._extra_steps()
        batches = self.sampler.epoch(epoch)
        totals: dict[str, torch.Tensor] = {}
        bar = tqdm(batches, desc=f"epoch {epoch}", total=len(batches), leave=False,
                   disable=not self.config["show_progress"] or not self.main_process,
                   dynamic_ncols=True)
        assert self.optimizer is not None
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for step, (users, pos, neg) in enumerate(bar):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                terms = self.train_module(users, pos, neg)
            loss = sum(terms.values())
            assert isinstance(loss, torch.Tensor)
            # this rank's part of the step's global loss (1.0 in a single process)
            part = batches.shares[step] if self.loss_reduction == "mean" else 1.0
            if self.world_size > 1 and self.loss_reduction != "batch":
                loss = loss * (part * self.world_size)  # DDP divides the summed gradients
            loss.backward()
            if self.clip:
                nn.utils.clip_grad_norm_(params, **self.clip)
            self.optimizer.step()
            for name, value in terms.items():
                d = value.detach() if part == 1.0 else value.detach() * part
                totals[name] = totals[name] + d if name in totals else d.clone()
        if self.world_size > 1 and self.loss_reduction != "batch":
            # every rank logs (and checks) the same global losses
            names = list(totals)
            stacked = torch.stack([totals[n].reshape(()).to(torch.float64) for n in names])
            torch.distributed.all_reduce(stacked)
            totals = dict(zip(names, stacked.unbind(), strict=True))
        for name, value in extra.items():  # the same on every rank: added after the reduction
            totals[name] = totals[name] + value if name in totals else value
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

    def _extra_steps(self) -> dict[str, torch.Tensor]:
        """Run the model's :meth:`~simkgcl.models.base.Recommender.extra_steps` (one optimiser
        step each, on the model itself: every rank computes the same); their terms' sums."""
        totals: dict[str, torch.Tensor] = {}
        assert self.optimizer is not None
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for step in self.model.extra_steps():
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                terms = step()
            loss = sum(terms.values())
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            if self.clip:
                nn.utils.clip_grad_norm_(params, **self.clip)
            self.optimizer.step()
            for name, value in terms.items():
                d = value.detach()
                totals[name] = totals[name] + d if name in totals else d.clone()
        return totals

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
        warmup = cfg["stopping_warmup"]
        budget = cfg["time_budget"]
        if not self.trainable and not st.finished:
            return self._fit_untrained()
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
                elif epoch >= warmup:
                    st.patience += 1
                    if st.patience > stopping_step:
                        stop = st.stopped_early = True
                        st.stop_reason = "early stop"
            elif eval_step <= 0:
                # Without validation the latest model is the one kept.
                st.best_epoch, improved = epoch, True
            record.update(best_epoch=st.best_epoch, best_score=st.best_score,
                          patience=st.patience, improved=improved)
            self._log_epoch(record)
            st.epoch = epoch + 1
            if improved and self.folder is not None:
                self.folder.save_checkpoint(self.folder.best_path, {
                    "model": self.model.state_dict(), "epoch": epoch,
                    "score": st.best_score, "valid": st.best_valid,
                })
            if not stop and budget is not None and st.train_seconds + st.valid_seconds >= budget:
                stop, st.stop_reason = True, "time budget"
                logger.info("time budget of %gs used up after epoch %d (%.1fs): stopping", budget,
                            epoch, st.train_seconds + st.valid_seconds)
            if self.world_size > 1:
                stop = any_rank(stop)  # clocks differ between ranks; decide together
                if stop and not st.stop_reason:
                    st.stop_reason = "time budget"
            if stop or st.epoch >= epochs:
                st.finished = True
            self._write_epoch(record)
            asked = [bool(callback(record)) for callback in self.callbacks]
            if any(asked) and not stop:
                stop = st.finished = True
                st.stop_reason = "callback"
                logger.info("a callback asked to stop after epoch %d", epoch)
                if self.folder is not None:
                    self.save_last()  # the folder says the run is finished
            if stop:
                if st.stopped_early:
                    logger.info("early stop after epoch %d: no improvement of %s in %d "
                                "validations; best epoch %d (%s = %.4f)", epoch,
                                self.valid_metric, st.patience, st.best_epoch,
                                self.valid_metric, st.best_score)
                break
        st.finished = True
        return st

    def _fit_untrained(self) -> TrainState:
        """No epochs for a model without trainable parameters: one validation (if any), which
        is the best and last model, so the run folder looks like any finished run's."""
        st = self.state
        valid = None
        if self.valid_task is not None:
            t0 = time.perf_counter()
            valid = self.validate()
            st.valid_seconds = time.perf_counter() - t0
            st.n_validations = 1
            st.best_score, st.best_valid = valid[self.valid_metric], dict(valid)
        st.best_epoch, st.finished, st.stop_reason = 0, True, "nothing to train"
        logger.info("model %s has no trainable parameters: no training epochs%s",
                    type(self.model).__name__,
                    f"; valid {format_metrics(valid)}" if valid is not None else "")
        if self.folder is not None:
            self.folder.save_checkpoint(self.folder.best_path, {
                "model": self.model.state_dict(), "epoch": 0, "score": st.best_score,
                "valid": st.best_valid})
            self.save_last()
        return st

    def _write_epoch(self, record: dict[str, Any]) -> None:
        if self.folder is not None:
            self.folder.append_metrics(record)
            self.save_last()

    def budget_left(self) -> bool:
        """Whether ``time_budget`` (if any) still allows another epoch."""
        budget = self.config["time_budget"]
        return budget is None or self.state.train_seconds + self.state.valid_seconds < budget

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
        """Write ``last.pt``: everything :meth:`resume` needs to continue exactly."""
        assert self.folder is not None
        self.folder.save_checkpoint(self.folder.last_path, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {},
            "state": asdict(self.state),
            "rng": capture_rng_state(),
        })

    def resume(self, checkpoint: Mapping[str, Any], source: str | Path = "last.pt") -> None:
        """Continue from a loaded ``last.pt`` (``source`` names it in errors): weights,
        optimiser, progress and random states.

        A run that had finished is reopened when the config now allows more of it (``epochs``
        raised, a larger ``stopping_step`` or ``time_budget``). Under DDP rank 0 reads the file
        and every rank resumes from what it broadcast.
        """
        require_entries(checkpoint, source, {"model": Mapping, "optimizer": Mapping,
                                             "state": Mapping, "rng": Mapping})
        state = _train_state(checkpoint["state"], source)
        load_model_weights(self.model, checkpoint["model"], source)
        try:
            if self.optimizer is not None:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            restore_rng_state(checkpoint["rng"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{source}: the optimiser or random state cannot be restored "
                                f"({first_line})") from exc
        self.state = state
        cfg = self.config
        if (state.epoch < cfg["epochs"] and state.patience <= cfg["stopping_step"]
                and self.budget_left()):
            state.finished = state.stopped_early = False
            state.stop_reason = ""
        logger.info("resumed after epoch %d (best epoch %d, %s = %s, patience %d)",
                    state.epoch - 1, state.best_epoch, self.valid_metric, state.best_score,
                    state.patience)


def _train_state(values: Mapping[str, Any], source: str | Path) -> TrainState:
    """A TrainState from a checkpoint's ``state`` entry, with its fields checked."""
    expected = {f.name: f.type for f in fields(TrainState)}
    if set(values) != set(expected):
        odd = sorted(set(values) ^ set(expected))
        raise ArtifactError(f"{source}: the training state has other fields than this version "
                            f"writes ({', '.join(odd)})")
    numbers = ("epoch", "best_epoch", "patience", "n_validations", "train_seconds",
               "valid_seconds")
    bad = [k for k in numbers if not isinstance(values[k], (int, float))
           or isinstance(values[k], bool)]
    if bad or not isinstance(values["best_valid"], Mapping):
        raise ArtifactError(f"{source}: the training state's "
                            f"{(bad or ['best_valid'])[0]!r} is not what this version writes")
    return TrainState(**dict(values))
