"""One training run end to end: the recipe.

``train(config)`` starts a run in a new run folder (:class:`~simkgcl.training.run_folder.RunFolder`
lists what it holds); ``resume_run(run_dir)`` continues one exactly where its last checkpoint
left it; ``evaluate_run(run_dir)`` reloads the best checkpoint and recomputes a split's metrics.

A run (:func:`_run`): join the process group when launched by ``torchrun`` -> read and split
the data -> open the run folder (rank 0 creates it and tells the others) -> build the model,
sampler and evaluator -> resume from ``last.pt`` if asked -> train with early stopping -> load the
best checkpoint -> test (metrics overall, per user and by user group) -> write ``results.json``,
``test_per_user.npz`` and the artifact.

Data-parallel runs (see :mod:`~simkgcl.training.distributed` and
:mod:`~simkgcl.training.components`): every process follows the same recipe; evaluation splits
the users over the processes and sums their metrics; only rank 0 writes the run folder, and
checkpoints reach the other ranks by broadcast, so no shared file system is needed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from simkgcl.artifact import load_artifact
from simkgcl.calibration import BlendTable
from simkgcl.config import Config
from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.errors import ArtifactError, ConfigError
from simkgcl.memory import peak_rss_mb
from simkgcl.models.base import Recommender
from simkgcl.training.checkpoint import load_checkpoint, load_model_weights, require_entries
from simkgcl.training.components import (
    Components,
    absolute_dataset,
    build_components,
    load_data,
)
from simkgcl.training.distributed import (
    ProcessGroup,
    data_parallel,
    on_main,
    process_group,
    resolve_device,
)
from simkgcl.training.environment import seed_everything, torch_threads
from simkgcl.training.run_folder import RunFolder
from simkgcl.training.test_phase import (
    TestOutcome,
    blend_transform,
    log_groups,
    run_test_phase,
    training_counts,
)
from simkgcl.training.trainer import EpochCallback, Trainer, TrainState, format_metrics

logger = logging.getLogger("simkgcl.training")

# Keys that may change when a run is resumed without breaking what was computed so far.
RESUMABLE_OVERRIDES = frozenset({"epochs", "stopping_step", "stopping_warmup", "time_budget",
                                 "show_progress", "device", "eval_batch_size", "threads"})


@dataclass
class RunResult:
    """What a finished run reports (also written to ``results.json``)."""

    run_dir: Path
    best_valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    valid_metric: str
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""  # "", "early stop", "time budget" or "callback"

    @property
    def best_valid_score(self) -> float | None:
        return self.best_valid.get(self.valid_metric)


# ---------------------------------------------------------------------------------------------
# public API


def train(
    config: Config | Mapping[str, Any] | None = None,
    *,
    data: tuple[KnowledgeDataset, Split] | None = None,
    callbacks: Sequence[EpochCallback] = (),
    evaluate_test: bool = True,
) -> RunResult:
    """Train ``config``'s model on its dataset, test the best model, and write a run folder.

    ``data`` (dataset, split) skips reading files (a search that trains many models on one
    dataset loads it once). ``callbacks`` are called after every epoch (see :class:`Trainer`).
    ``evaluate_test=False`` leaves the test split untouched (``test`` is empty; a search computes
    it only for its best trial, with :func:`evaluate_run`).
    """
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        config = Config(config)
    return _run(absolute_dataset(config), data=data, callbacks=callbacks, resume_from=None,
                evaluate_test=evaluate_test)


def resume_run(
    run_dir: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    data: tuple[KnowledgeDataset, Split] | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> RunResult:
    """Continue ``run_dir`` from ``checkpoints/last.pt`` exactly as if it had never stopped.

    Only keys in :data:`RESUMABLE_OVERRIDES` may be changed (e.g. ``epochs`` to train longer).
    """
    folder = RunFolder(run_dir)
    folder.require_resumable()
    if isinstance(overrides, Mapping):
        keys = {k.split(".")[0] for k in overrides}
    else:
        keys = {o.split("=", 1)[0].split(".")[0].strip() for o in overrides}
    bad = sorted(keys - RESUMABLE_OVERRIDES)
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming (it would break what "
                          f"was trained so far); changeable: {', '.join(sorted(RESUMABLE_OVERRIDES))}")
    return _run(folder.read_config(overrides), data=data, callbacks=callbacks, resume_from=folder)


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    data: tuple[KnowledgeDataset, Split] | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Reload ``run_dir``'s best checkpoint with its saved config and data; metrics of ``split``.

    On the same machine this reproduces the run's test metrics exactly (same split from the same
    seed, same weights, same batches).
    """
    if split not in ("valid", "test"):
        raise ConfigError(f"split must be 'valid' or 'test', got {split!r}")
    folder = RunFolder(run_dir)
    config = folder.read_config({"device": device} if device else {})
    dev = resolve_device(config["device"])
    with torch_threads(config["threads"]):
        seed_everything(config["seed"], config["reproducibility"])
        dataset, data_split = data if data is not None else load_data(config)
        parts = build_components(config, dataset, data_split, dev)
        path = folder.best_or_last_path()
        _load_weights(parts.model, load_checkpoint(path, map_location=dev), path)
        if split == "valid":
            task = parts.evaluator.task(data_split.valid, data_split.valid_exclusions())
        else:
            task = parts.evaluator.task(data_split.test, data_split.test_exclusions())
        table = _artifact_blend(folder)
        transform = (None if table is None else
                     blend_transform(table, dataset, data_split, parts.evaluator.device))
        return parts.evaluator.evaluate(parts.model, task, transform)


def _artifact_blend(folder: RunFolder) -> BlendTable | None:
    """The popularity blend the run's artifact serves (None: none, or no artifact yet)."""
    if not folder.artifact_dir.is_dir():
        return None
    return load_artifact(folder.path).blend


# ---------------------------------------------------------------------------------------------
# the recipe


def _run(config: Config, *, data: tuple[KnowledgeDataset, Split] | None,
         callbacks: Sequence[EpochCallback], resume_from: RunFolder | None,
         evaluate_test: bool = True) -> RunResult:
    """One run, as every process of it (one, or each of torchrun's) follows it."""
    device = resolve_device(config["device"])
    with torch_threads(config["threads"]), process_group(device) as group:
        seed_everything(config["seed"], config["reproducibility"])
        dataset, split = data if data is not None else load_data(config)
        folder = resume_from or _new_folder(config, dataset, group)
        with _run_log(folder if group.main else None, quiet=not group.main):
            started = time.perf_counter()
            _log_start(config, dataset, split, folder, resumed=resume_from is not None)
            parts = build_components(config, dataset, split, device, group.rank, group.world_size)
            _log_model(config, parts, device, group)
            trainer = _make_trainer(config, parts, split, folder, group, device, callbacks)
            if resume_from is not None:
                _resume(trainer, folder, group)
            state = _fit(trainer)
            _keep_best(parts.model, folder, group, evaluate_test)
            logger.info("best valid: %s", format_metrics(state.best_valid))
            outcome = (run_test_phase(config, parts, dataset, split) if evaluate_test
                       else TestOutcome({}, 0.0, None))
            test, test_seconds, per_user = outcome.test, outcome.seconds, outcome.per_user
            history = folder.read_history() if group.main else []
            result = RunResult(run_dir=folder.path, best_valid=state.best_valid, test=test,
                               best_epoch=state.best_epoch, epochs_run=state.epoch,
                               stopped_early=state.stopped_early,
                               valid_metric=config["valid_metric"], history=history,
                               stop_reason=state.stop_reason)
            if group.main:
                summary = _results_summary(
                    config, dataset.name, state, test if evaluate_test else None, history,
                    test_seconds, time.perf_counter() - started, device, group)
                if per_user is not None:
                    per_user.save(folder.per_user_path)
                    summary["test_groups"] = log_groups(
                        per_user, config, "test (blended)" if outcome.blend else "test")
                summary.update(outcome.extra)
                folder.write_results(summary)
                _write_artifact(folder, config, dataset, split, parts.model, state.best_valid,
                                test if evaluate_test else None, outcome.blend)
                logger.info("run folder: %s", folder.path)
        return result


def _new_folder(config: Config, dataset: KnowledgeDataset, group: ProcessGroup) -> RunFolder:
    """Rank 0 creates the folder and writes ``config.yaml``; every rank learns its path."""

    def create() -> str:
        folder = RunFolder.create(config["checkpoint_dir"], config["model"], dataset.name)
        folder.write_config(config)
        return str(folder.path)

    return RunFolder(on_main(create, group))


@contextlib.contextmanager
def _run_log(folder: RunFolder | None, quiet: bool) -> Iterator[None]:
    """Attach ``train.log`` to the package logger for the run; ``quiet`` (DDP ranks other
    than 0) lets only warnings through, so a run logs once."""
    handler = folder.log_handler() if folder is not None else None
    pkg_logger = logging.getLogger("simkgcl")
    old_level = pkg_logger.level
    if quiet:
        pkg_logger.setLevel(logging.WARNING)
    elif pkg_logger.level == logging.NOTSET or pkg_logger.level > logging.INFO:
        pkg_logger.setLevel(logging.INFO)
    if handler is not None:
        pkg_logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            pkg_logger.removeHandler(handler)
            handler.close()
        pkg_logger.setLevel(old_level)


def _log_start(config: Config, dataset: KnowledgeDataset, split: Split, folder: RunFolder,
               resumed: bool) -> None:
    logger.info("%s run %s", "resuming" if resumed else "starting", folder.path)
    logger.info("resolved config:\n  %s", "\n  ".join(config.describe()))
    logger.info("dataset %s: %d users, %d items, %d entities, %d relations, %d triples; "
                "split train/valid/test = %d/%d/%d interactions", dataset.name,
                dataset.n_users, dataset.n_items, dataset.n_entities, dataset.n_relations,
                dataset.n_triples, len(split.train), len(split.valid), len(split.test))
    for key, value in {**dataset.report, **split.notes}.items():
        logger.info("data note: %s = %s", key, value)
    for warning in dataset.warnings:
        logger.warning("data: %s", warning)


def _log_model(config: Config, parts: Components, device: torch.device,
               group: ProcessGroup) -> None:
    n_params = sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
    per_process = ""
    if group.distributed:
        per_process = (f" on each of {group.world_size} processes (global batch "
                       f"{group.world_size * config['train_batch_size']})")
    logger.info("model %s: %d trainable parameters; device %s; %d batches per epoch%s",
                config["model"], n_params, device, parts.sampler.n_batches, per_process)


def _make_trainer(config: Config, parts: Components, split: Split, folder: RunFolder,
                  group: ProcessGroup, device: torch.device,
                  callbacks: Sequence[EpochCallback]) -> Trainer:
    valid_task = None
    if len(split.valid):
        valid_task = parts.evaluator.task(split.valid, split.valid_exclusions())
    else:
        logger.warning("the validation split is empty: no early stopping, the last model is "
                       "tested")
    return Trainer(parts.model, config, parts.sampler, parts.evaluator, valid_task,
                   folder=folder if group.main else None, callbacks=callbacks,
                   train_module=data_parallel(parts.model, device, group),
                   tensorboard=folder.tensorboard_writer() if group.main else None)


def _resume(trainer: Trainer, folder: RunFolder, group: ProcessGroup) -> None:
    last = _read_on_main(folder.last_path, group)
    if last is None:
        raise ArtifactError(f"{folder.last_path}: checkpoint not found")
    trainer.resume(last, source=folder.last_path)
    if group.main:  # drop records of epochs that will be trained again
        folder.truncate_history(before_epoch=trainer.state.epoch)


def _fit(trainer: Trainer) -> TrainState:
    try:
        return trainer.fit()
    finally:
        if trainer.tensorboard is not None:
            trainer.tensorboard.close()


def _keep_best(model: Recommender, folder: RunFolder, group: ProcessGroup,
               evaluate_test: bool) -> None:
    """Load the best checkpoint's weights into ``model`` (the last model stays without one)."""
    best = _read_on_main(folder.best_path, group)
    if best is None:
        logger.info("no best checkpoint (no validation ran): the last model is kept")
        return
    _load_weights(model, best, folder.best_path)
    logger.info("%s the best model (epoch %s)", "testing" if evaluate_test else "keeping",
                best.get("epoch"))


def _results_summary(config: Config, dataset_name: str, state: TrainState,
                     test: dict[str, float] | None, history: list[dict[str, Any]],
                     test_seconds: float, wall_seconds: float, device: torch.device,
                     group: ProcessGroup) -> dict[str, Any]:
    """What ``results.json`` holds."""
    n_trained = max(1, len(history))
    return {
        "model": config["model"],
        "dataset": dataset_name,
        "valid_metric": config["valid_metric"],
        "best_valid_score": state.best_score,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "stop_reason": state.stop_reason,
        "best_valid": state.best_valid,
        "test": test,
        "seconds_per_epoch": sum(r["train_seconds"] for r in history) / n_trained,
        "seconds_per_eval": (state.valid_seconds / state.n_validations
                             if state.n_validations else test_seconds or None),
        "test_eval_seconds": test_seconds,
        "wall_seconds_this_session": wall_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "world_size": group.world_size,
    }


def _write_artifact(folder: RunFolder, config: Config, dataset: KnowledgeDataset, split: Split,
                    model: Recommender, best_valid: dict[str, float],
                    test: dict[str, float] | None, blend: BlendTable | None) -> None:
    """The artifact, with the popularity blend (table + training counts) when one is kept."""
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model.final_embeddings()
        fold_in = model.fold_in_items()
    extra: dict[str, Any] = {}
    if blend is not None:
        extra = {"blend": blend.to_dict(), "popularity": training_counts(dataset, split)[1]}
    kg = ((dataset.triples, list(dataset.entity_tokens), list(dataset.relation_tokens))
          if dataset.n_triples else None)
    folder.save_artifact(model=config["model"], dataset=dataset.name, config=config.to_dict(),
                         metrics={"valid": best_valid, **({"test": test} if test is not None
                                                          else {})},
                         user_tokens=dataset.user_tokens, item_tokens=dataset.item_tokens,
                         user_embeddings=user_emb, item_embeddings=item_emb,
                         train_users=split.train.users, train_items=split.train.items, kg=kg,
                         foldin_items=None if fold_in is None else fold_in[0],
                         foldin=None if fold_in is None else
                         {"method": "propagation", "user_layer0_weight": fold_in[1]}, **extra)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _read_on_main(path: Path, group: ProcessGroup) -> dict[str, Any] | None:
    """The checkpoint at ``path`` as rank 0 reads it (None if missing), on every rank."""
    return on_main(lambda: load_checkpoint(path) if path.is_file() else None, group)


def _load_weights(model: Recommender, checkpoint: Mapping[str, Any], path: Path) -> None:
    require_entries(checkpoint, path, {"model": Mapping})
    load_model_weights(model, checkpoint["model"], path)


__all__ = ["RESUMABLE_OVERRIDES", "RunResult", "evaluate_run", "load_data", "resolve_device",
           "resume_run", "train"]
