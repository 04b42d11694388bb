"""One training run end to end: data, model, training, test, run folder, artifact.

``train(config)`` starts a run in ``<checkpoint_dir>/<model>-<dataset>-<YYYYmmdd-HHMMSS>/``;
``resume_run(run_dir)`` continues one exactly where its last checkpoint left it;
``evaluate_run(run_dir)`` reloads the best checkpoint and recomputes a split's metrics.

The run folder holds ``config.yaml`` (the resolved config), ``train.log``, ``metrics.jsonl`` (one
line per epoch), ``checkpoints/{best,last}.pt``, ``results.json`` (with the test metrics by
user group), ``test_per_user.npz`` (every test user's metrics) and ``artifact/``.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), a run joins the process group
(NCCL on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on CPU) and trains data-parallel: every
rank trains on its share of each step's rows, DDP all-reduces the gradients, evaluation splits
the users over the ranks and sums their metrics, and only rank 0 writes the run folder (its
checkpoints reach the other ranks by broadcast, so no shared file system is needed).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simkgcl.artifact import save_artifact
from simkgcl.config import Config
from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.errors import ArtifactError, ConfigError
from simkgcl.evaluation.evaluator import Evaluator
from simkgcl.evaluation.groups import breakdown, format_groups
from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.graph import build_graph
from simkgcl.memory import peak_rss_mb
from simkgcl.models import get_model_class
from simkgcl.models.base import Recommender
from simkgcl.sampling.negative import NegativeSampler
from simkgcl.training.checkpoint import atomic_write_bytes, load_checkpoint
from simkgcl.training.trainer import EpochCallback, Trainer, format_metrics

logger = logging.getLogger("simkgcl.training")

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.jsonl"
PER_USER_FILE = "test_per_user.npz"  # every test user's metrics (simkgcl.evaluation.per_user)
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
# environment


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error.

    Under torchrun (``LOCAL_RANK`` set), ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ and _env_world_size() > 1:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device': {name!r} requested but CUDA is not available "
                              "(use device=cpu or device=auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"config key 'device': {name!r} but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    return device


def seed_everything(seed: int, reproducible: bool) -> None:
    """Seed Python, numpy and torch; deterministic cuDNN when asked (cheap)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = reproducible
        torch.backends.cudnn.benchmark = not reproducible


def _env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join torchrun's process group if launched by it; (rank, world size) either way.

    The group is created once per process (several runs, e.g. one per seed, share it) from the
    environment torchrun sets (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``).
    """
    if not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        if _env_world_size() <= 1:
            return 0, 1
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend, init_method="env://")
        atexit.register(_leave_process_group)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _leave_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _rank0_checkpoint(path: Path, main_process: bool, world_size: int) -> dict[str, Any] | None:
    """Rank 0 reads ``path`` (None if missing) and every rank receives what it read."""
    holder = [load_checkpoint(path) if main_process and path.is_file() else None]
    if world_size > 1:
        torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


# ---------------------------------------------------------------------------------------------
# data


def load_data(config: Mapping[str, Any]) -> tuple[KnowledgeDataset, Split]:
    """Read the config's dataset and split it as the config says (deterministic in ``seed``)."""
    from simkgcl.data import load_dataset, split_dataset

    dataset = load_dataset(
        config["dataset"],
        format=config["data_format"],
        kg_id_space=config["kg_id_space"],
        threshold=config["threshold"],
        kg_reverse_r=config["kg_reverse_r"],
        benchmark_filename=config["benchmark_filename"],
    )
    split = split_dataset(dataset, eval_args=config["eval_args"], seed=config["seed"],
                          valid_ratio=config["valid_ratio"], valid_on_test=config["valid_on_test"])
    return dataset, split


def _absolute_dataset(config: Config) -> Config:
    """Store an existing dataset path as an absolute path, so the run folder works anywhere."""
    path = Path(config["dataset"]).expanduser()
    if path.exists() and str(path.resolve()) != config["dataset"]:
        return config.replace(dataset=str(path.resolve()))
    return config


def _test_exclusions(config: Mapping[str, Any], split: Split) -> list:
    # When validation *is* the test set (valid_on_test), hiding it would hide the answers.
    if config["valid_on_test"] or len(split.valid) == 0:
        return [split.train]
    return [split.train, split.valid]


# ---------------------------------------------------------------------------------------------
# run folder


def new_run_dir(config: Mapping[str, Any], dataset_name: str) -> Path:
    """``<checkpoint_dir>/<model>-<dataset>-<timestamp>``, suffixed if that name is taken."""
    root = Path(config["checkpoint_dir"])
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return create_fresh_dir(root, f"{config['model']}-{safe_path_part(dataset_name)}-{stamp}")


def safe_path_part(name: str) -> str:
    """``name`` with every character that is awkward in a folder name replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def create_fresh_dir(root: Path, base: str) -> Path:
    """Create ``root/base`` (or ``base-2``, ``base-3`` ... if taken) atomically and return it."""
    for n in range(1, 10_000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ArtifactError(f"{root}: cannot create a fresh folder named {base}")


class _RunLog:
    """Attach ``train.log`` to the package logger for the duration of a run.

    ``quiet`` (DDP ranks other than 0) lets only warnings through, so a run logs once.
    """

    def __init__(self, path: Path | None, quiet: bool = False):
        self.path = path
        self.quiet = quiet
        self.handler: logging.Handler | None = None
        self.pkg_logger = logging.getLogger("simkgcl")
        self.old_level = self.pkg_logger.level

    def __enter__(self) -> _RunLog:
        if self.quiet:
            self.pkg_logger.setLevel(logging.WARNING)
        elif self.pkg_logger.level == logging.NOTSET or self.pkg_logger.level > logging.INFO:
            self.pkg_logger.setLevel(logging.INFO)
        if self.path is not None:
            self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.pkg_logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            self.pkg_logger.removeHandler(self.handler)
            self.handler.close()
        self.pkg_logger.setLevel(self.old_level)


def _tensorboard_writer(run_dir: Path | None):
    if run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def read_history(run_dir: Path, before_epoch: int | None = None) -> list[dict[str, Any]]:
    """Epoch records from ``metrics.jsonl`` (only epochs < ``before_epoch`` if given)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if before_epoch is None or rec.get("epoch", 0) < before_epoch:
            records.append(rec)
    return records


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
    config = _absolute_dataset(config)
    return _run(config, data=data, callbacks=callbacks, resume_dir=None,
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
    run_path = Path(run_dir)
    cfg_path = run_path / CONFIG_FILE
    if not cfg_path.is_file() or not (run_path / "checkpoints" / "last.pt").is_file():
        raise ArtifactError(f"{run_path}: not a resumable run folder (needs {CONFIG_FILE} and "
                            "checkpoints/last.pt; a run writes them after its first epoch)")
    if isinstance(overrides, Mapping):
        keys = {k.split(".")[0] for k in overrides}
    else:
        keys = {o.split("=", 1)[0].split(".")[0].strip() for o in overrides}
    bad = sorted(keys - RESUMABLE_OVERRIDES)
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming (it would break what "
                          f"was trained so far); changeable: {', '.join(sorted(RESUMABLE_OVERRIDES))}")
    config = Config.load(cfg_path, overrides=overrides)
    return _run(config, data=data, callbacks=callbacks, resume_dir=run_path)


def _build(config: Config, dataset: KnowledgeDataset, split: Split, device: torch.device,
           rank: int = 0, world_size: int = 1) -> tuple[Recommender, NegativeSampler, Evaluator]:
    graph = build_graph(dataset, split).to(device)
    model = get_model_class(config["model"])(graph, config).to(device)
    sampler = NegativeSampler(
        split.train.users, split.train.items, dataset.n_items,
        batch_size=config["train_batch_size"], seed=config["seed"],
        num_negatives=config["neg_sampling"]["uniform"], device=device,
        rank=rank, world_size=world_size,
    )
    evaluator = Evaluator.from_config(config, dataset.n_users, dataset.n_items, device,
                                      rank=rank, world_size=world_size)
    return model, sampler, evaluator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Let torch use ``n`` CPU threads inside the block (None: leave it alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(config: Config, *, data, callbacks, resume_dir: Path | None,
         evaluate_test: bool = True) -> RunResult:
    with torch_threads(config["threads"]):
        return _run_threads_set(config, data=data, callbacks=callbacks, resume_dir=resume_dir,
                                evaluate_test=evaluate_test)


def _run_threads_set(config: Config, *, data, callbacks, resume_dir: Path | None,
                     evaluate_test: bool) -> RunResult:
    device = resolve_device(config["device"])
    rank, world_size = init_distributed(device)
    main_process = rank == 0
    seed_everything(config["seed"], config["reproducibility"])
    dataset, split = data if data is not None else load_data(config)

    if resume_dir is not None:
        run_dir = resume_dir
    elif main_process:
        run_dir = new_run_dir(config, dataset.name)
    else:
        run_dir = None
    if world_size > 1:  # every rank learns rank 0's folder
        holder = [str(run_dir) if run_dir is not None else None]
        torch.distributed.broadcast_object_list(holder, src=0)
        run_dir = Path(holder[0])  # type: ignore[arg-type]
    assert run_dir is not None

    with _RunLog(run_dir / LOG_FILE if main_process else None, quiet=not main_process):
        started = time.perf_counter()
        if main_process and resume_dir is None:
            atomic_write_bytes(run_dir / CONFIG_FILE, config.to_yaml().encode())
        logger.info("%s run %s", "resuming" if resume_dir else "starting", run_dir)
        logger.info("resolved config:\n  %s", "\n  ".join(config.describe()))
        logger.info("dataset %s: %d users, %d items, %d entities, %d relations, %d triples; "
                    "split train/valid/test = %d/%d/%d interactions", dataset.name,
                    dataset.n_users, dataset.n_items, dataset.n_entities, dataset.n_relations,
                    dataset.n_triples, len(split.train), len(split.valid), len(split.test))
        for key, value in {**dataset.report, **split.notes}.items():
            logger.info("data note: %s = %s", key, value)
        for warning in dataset.warnings:
            logger.warning("data: %s", warning)

        model, sampler, evaluator = _build(config, dataset, split, device, rank, world_size)
        logger.info("model %s: %d trainable parameters; device %s; %d batches per epoch%s",
                    config["model"], sum(p.numel() for p in model.parameters() if p.requires_grad),
                    device, sampler.n_batches,
                    f" on each of {world_size} processes (global batch "
                    f"{world_size * config['train_batch_size']})" if world_size > 1 else "")
        train_module: torch.nn.Module = model
        if world_size > 1:
            # Buffers are the graph's index structures, built identically on every rank: no need
            # to broadcast them before every forward.
            ddp = torch.nn.parallel.DistributedDataParallel
            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(ddp).parameters
                              else {"broadcast_buffers": False})
            train_module = ddp(model, device_ids=[device.index] if device.type == "cuda" else None,
                               **no_buffer_sync)
        valid_task = evaluator.task(split.valid, [split.train]) if len(split.valid) else None
        if valid_task is None:
            logger.warning("the validation split is empty: no early stopping, the last model is "
                           "tested")
        tb = _tensorboard_writer(run_dir) if main_process else None
        trainer = Trainer(model, config, sampler, evaluator, valid_task, run_dir=run_dir,
                          callbacks=callbacks, train_module=train_module,
                          write_files=main_process, tensorboard=tb)
        if resume_dir is not None:
            last = _rank0_checkpoint(trainer.last_path, main_process, world_size)
            if last is None:
                raise ArtifactError(f"{trainer.last_path}: missing")
            trainer.restore(last)
            st = trainer.state
            if (st.epoch < config["epochs"] and st.patience <= config["stopping_step"]
                    and trainer.budget_left()):
                st.finished = st.stopped_early = False
                st.stop_reason = ""
            logger.info("resumed after epoch %d (best epoch %d, %s = %s, patience %d)",
                        st.epoch - 1, st.best_epoch, config["valid_metric"], st.best_score,
                        st.patience)
            if main_process:  # drop records of epochs that will be trained again
                kept = read_history(run_dir, before_epoch=st.epoch)
                atomic_write_bytes(run_dir / METRICS_FILE,
                                   "".join(json.dumps(r) + "\n" for r in kept).encode())
        try:
            state = trainer.fit()
        finally:
            if tb is not None:
                tb.close()

        best = _rank0_checkpoint(trainer.best_path, main_process, world_size)
        if best is not None:
            model.load_state_dict(best["model"])
            logger.info("%s the best model (epoch %d)",
                        "testing" if evaluate_test else "keeping", best["epoch"])
        else:
            logger.info("no best checkpoint (no validation ran): the last model is kept")
        test: dict[str, float] = {}
        test_seconds = 0.0
        per_user: PerUserMetrics | None = None
        logger.info("best valid: %s", format_metrics(state.best_valid))
        if evaluate_test:
            test_task = evaluator.task(split.test, _test_exclusions(config, split))
            t0 = time.perf_counter()
            if config["test_per_user"]:
                test, per_user = evaluator.evaluate_per_user(model, test_task)
                per_user = per_user.labelled(dataset.user_tokens, split.train.users,
                                             dataset.n_users)
            else:
                test, per_user = evaluator.evaluate(model, test_task), None
            test_seconds = time.perf_counter() - t0
            logger.info("test:       %s", format_metrics(test))

        history = read_history(run_dir) if main_process else []
        result = RunResult(run_dir=run_dir, best_valid=state.best_valid, test=test,
                           best_epoch=state.best_epoch, epochs_run=state.epoch,
                           stopped_early=state.stopped_early,
                           valid_metric=config["valid_metric"], history=history,
                           stop_reason=state.stop_reason)
        if main_process:
            n_trained = max(1, len(history))
            summary = {
                "model": config["model"],
                "dataset": dataset.name,
                "valid_metric": config["valid_metric"],
                "best_valid_score": state.best_score,
                "best_epoch": state.best_epoch,
                "epochs_run": state.epoch,
                "stopped_early": state.stopped_early,
                "stop_reason": state.stop_reason,
                "best_valid": state.best_valid,
                "test": test if evaluate_test else None,
                "seconds_per_epoch": sum(r["train_seconds"] for r in history) / n_trained,
                "seconds_per_eval": (state.valid_seconds / state.n_validations
                                     if state.n_validations else test_seconds or None),
                "test_eval_seconds": test_seconds,
                "wall_seconds_this_session": time.perf_counter() - started,
                "peak_rss_mb": peak_rss_mb(),
                "device": str(device),
                "world_size": world_size,
            }
            if per_user is not None:
                per_user.save(run_dir / PER_USER_FILE)
                summary["test_groups"] = _log_groups(per_user, config)
            atomic_write_bytes(run_dir / RESULTS_FILE,
                               (json.dumps(summary, indent=2) + "\n").encode())
            model.eval()
            with torch.no_grad():
                user_emb, item_emb = model.final_embeddings()
            save_artifact(run_dir, model=config["model"], dataset=dataset.name,
                          config=config.to_dict(),
                          metrics={"valid": state.best_valid,
                                   **({"test": test} if evaluate_test else {})},
                          user_tokens=dataset.user_tokens, item_tokens=dataset.item_tokens,
                          user_embeddings=user_emb, item_embeddings=item_emb,
                          train_users=split.train.users, train_items=split.train.items)
            logger.info("run folder: %s", run_dir)
        return result


def _log_groups(per_user: PerUserMetrics, config: Config) -> dict[str, Any]:
    """Test metrics by user group (``results.json``'s ``test_groups``), also logged."""
    groups = breakdown(per_user, config["user_groups"], config["user_group_quantiles"])
    for kind in ("edges", "quantiles"):
        if kind in groups:
            logger.info("test by training interactions (%s):\n%s", kind,
                        format_groups(groups[kind], per_user.metric_names))
    return groups


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
    run_path = Path(run_dir)
    cfg_path = run_path / CONFIG_FILE
    if not cfg_path.is_file():
        raise ArtifactError(f"{run_path}: not a run folder (no {CONFIG_FILE})")
    overrides = {"device": device} if device else {}
    config = Config.load(cfg_path, overrides=overrides)
    dev = resolve_device(config["device"])
    with torch_threads(config["threads"]):
        return _evaluate_saved(run_path, config, split, data, dev)


def _evaluate_saved(run_path: Path, config: Config, split: str,
                    data: tuple[KnowledgeDataset, Split] | None,
                    dev: torch.device) -> dict[str, float]:
    seed_everything(config["seed"], config["reproducibility"])
    dataset, data_split = data if data is not None else load_data(config)
    model, _, evaluator = _build(config, dataset, data_split, dev)
    best_path = run_path / "checkpoints" / "best.pt"
    if not best_path.is_file():
        best_path = run_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(best_path, map_location=dev)
    model.load_state_dict(ckpt["model"])
    if split == "valid":
        task = evaluator.task(data_split.valid, [data_split.train])
    else:
        task = evaluator.task(data_split.test, _test_exclusions(config, data_split))
    return evaluator.evaluate(model, task)


def record_test_metrics(run_dir: str | Path, test: Mapping[str, float]) -> None:
    """Fill in the test metrics of a run trained with ``evaluate_test=False`` (a search's best
    trial, tested at the end) so its ``results.json`` is complete."""
    results = read_results(run_dir)
    results["test"] = dict(test)
    atomic_write_bytes(Path(run_dir) / RESULTS_FILE,
                       (json.dumps(results, indent=2) + "\n").encode())


def read_results(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise ArtifactError(f"{run_dir}: no {RESULTS_FILE} (the run did not finish)")
    return json.loads(path.read_text())


__all__ = ["PER_USER_FILE", "RunResult", "evaluate_run", "init_distributed", "load_data", "read_results",
           "record_test_metrics", "resolve_device",
           "resume_run", "seed_everything", "train"]
