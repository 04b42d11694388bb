"""Hyper-parameter search with Optuna: one full training run per trial, judged on validation.

Each trial trains with early stopping (:func:`simkgcl.training.run.train`); its objective is the
best ``valid_metric`` on the validation split. Validation scores are reported to the trial after
every validated epoch, and a pruner stops trials that are clearly behind the others at the same
epoch (raising ``optuna.TrialPruned`` from the epoch callback; the trainer has written
``metrics.jsonl`` and ``checkpoints/last.pt`` up to the previous epoch, so the run folder is a
consistent, resumable state). The choice of the best trial reads validation scores only; test
metrics are computed for that trial alone, at the end, from its best checkpoint.

The study lives in a database (``<out>/study.db`` by default), so running the same command again
continues an interrupted search, and several processes (or machines, with a PostgreSQL
``--storage`` URL) can work on one study.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simkgcl.config import Config
from simkgcl.data.dataset import KnowledgeDataset, Split
from simkgcl.errors import ConfigError
from simkgcl.training.components import absolute_dataset, load_data
from simkgcl.training.run import evaluate_run, train
from simkgcl.training.run_folder import RunFolder
from simkgcl.training.trainer import TrainingDiverged
from simkgcl.tuning.report import TuneResult, run_config_dict, write_reports
from simkgcl.tuning.space import RUN_SPECIFIC_KEYS, SearchSpace

logger = logging.getLogger("simkgcl.tuning")

# Keys that change the data a run sees (trials that share them share one loaded dataset).
DATA_KEYS = ("dataset", "data_format", "kg_id_space", "threshold", "kg_reverse_r",
             "benchmark_filename", "valid_ratio", "valid_on_test", "eval_args", "seed")
STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
_STORAGE_ATTEMPTS = 5


def require_optuna() -> Any:
    """The optuna module, or a ConfigError saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("hyper-parameter search needs optuna: pip install 'simkgcl[tune]' "
                          f"(or pip install optuna) ({exc})") from None
    return optuna


def default_study_name(base: Config, space: SearchSpace) -> str:
    """``<model>-<dataset>-<space file stem>``: stable, so the same command resumes."""
    dataset = Path(str(base["dataset"])).name or "dataset"
    stem = Path(space.source).stem if space.source != "space" else "space"
    return f"{base['model']}-{dataset}-{stem}"


class _DataCache:
    """Loads a dataset once for all trials that share its data keys."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.data: tuple[KnowledgeDataset, Split] | None = None

    def get(self, config: Config) -> tuple[KnowledgeDataset, Split]:
        key = json.dumps({k: config[k] for k in DATA_KEYS}, sort_keys=True, default=str)
        if key != self.key or self.data is None:
            self.data = load_data(config)
            self.key = key
        return self.data


class PruningCallback:
    """Epoch callback: report the validation score to the trial; raise TrialPruned if told."""

    def __init__(self, trial: Any, valid_metric: str) -> None:
        self.trial = trial
        self.valid_metric = valid_metric
        self.pruned_epoch: int | None = None

    def __call__(self, record: Mapping[str, Any]) -> None:
        score = record.get("valid_score")
        if score is None or not math.isfinite(score):
            return None
        epoch = int(record["epoch"])
        self.trial.report(float(score), epoch)
        if self.trial.should_prune():
            import optuna

            self.pruned_epoch = epoch
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.valid_metric} = "
                                     f"{score:.4f} is behind the other trials")
        return None


def _find_run_dir(trial_dir: Path) -> Path | None:
    runs = sorted(p for p in trial_dir.iterdir() if RunFolder.is_run_folder(p)) \
        if trial_dir.is_dir() else []
    return runs[-1] if runs else None


def make_objective(base: Config, space: SearchSpace, out_dir: Path,
                   cache: _DataCache | None = None):
    """``objective(trial) -> best valid score`` for ``study.optimize``."""
    optuna = require_optuna()
    cache = cache or _DataCache()
    base_values = base.to_dict()

    def objective(trial: Any) -> float:
        values = space.suggest(trial)
        trial_dir = out_dir / TRIALS_DIR / f"{trial.number:04d}"
        config = Config(base_values, overrides={**values, "checkpoint_dir": str(trial_dir),
                                                "show_progress": False})
        trial.set_user_attr("values", values)
        logger.info("trial %d: %s", trial.number,
                    " ".join(f"{k}={v!r}" for k, v in values.items()))
        callback = PruningCallback(trial, config["valid_metric"])
        started = time.perf_counter()
        try:
            # test metrics are computed for the best trial only, at the end (evaluate_run)
            result = train(config, data=cache.get(config), callbacks=[callback],
                           evaluate_test=False)
        except optuna.TrialPruned:
            run_dir = _find_run_dir(trial_dir)
            trial.set_user_attr("run_dir", str(run_dir) if run_dir else None)
            trial.set_user_attr("pruned_epoch", callback.pruned_epoch)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            logger.info("trial %d pruned after epoch %s", trial.number, callback.pruned_epoch)
            raise
        except TrainingDiverged as exc:
            # A diverging setting is clearly worse: count it as pruned, not as a crash.
            run_dir = _find_run_dir(trial_dir)
            trial.set_user_attr("run_dir", str(run_dir) if run_dir else None)
            trial.set_user_attr("diverged", str(exc))
            trial.set_user_attr("seconds", time.perf_counter() - started)
            logger.info("trial %d diverged: %s", trial.number, exc)
            raise optuna.TrialPruned(f"diverged: {exc}") from exc
        score = result.best_valid_score
        if score is None or not math.isfinite(score):
            raise ConfigError(f"trial {trial.number} produced no validation score (eval_step=0 "
                              "or an empty validation split?): nothing to search on")
        trial.set_user_attr("run_dir", str(result.run_dir))
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("stopped_early", result.stopped_early)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        logger.info("trial %d: %s = %.4f (best epoch %d of %d)", trial.number,
                    config["valid_metric"], score, result.best_epoch, result.epochs_run)
        return float(score)

    return objective


def make_storage(url: str) -> Any:
    """An optuna storage; database URLs get heartbeats so a killed worker's trial is retried."""
    optuna = require_optuna()
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        return url
    # The stale-trial hook was renamed in optuna 4.9; heartbeats are flagged experimental.
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    hook = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
            else "failed_trial_callback")
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    last_error: Exception | None = None
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=60, grace_period=180,
                    **{hook: retry(max_retry=1)})
        except ImportError as exc:
            raise ConfigError(f"storage {url!r} needs a database driver that is not installed: "
                              f"{exc}") from None
        except Exception as exc:  # sqlalchemy's own types: bad URL, or a race (see below)
            # Workers started together race to create the schema of a new database; the
            # loser sees a constraint error and succeeds on the next try.
            last_error = exc
            time.sleep(0.2 * (attempt + 1))
    raise ConfigError(f"cannot open study storage {url!r}: {last_error}")


def open_study(base: Config, space: SearchSpace, *, study_name: str, storage: Any,
               sampler_seed: int, prune: bool = True, prune_warmup: int = 10,
               prune_startup_trials: int = 3, n_trials: int = 20) -> Any:
    """Create or load the study and check that it was made with the same base config and space.

    The sampler seed is mixed with the number of trials already stored so that a resumed session
    does not repeat the first session's random start-up suggestions.
    """
    optuna = require_optuna()
    direction = "maximize" if base["valid_metric_bigger"] else "minimize"
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=prune_startup_trials,
                                          n_warmup_steps=prune_warmup, interval_steps=1)
              if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction,
                                pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {study_name!r} was created to {study.direction.name.lower()} "
                          f"its objective, this config asks to {direction}; use another --study")
    stored = study.user_attrs
    identity = {"base_config": json.loads(json.dumps(run_config_dict(base), default=str)),
                "space": json.loads(json.dumps(space.describe(), default=str))}
    for name, value in identity.items():
        if name not in stored:
            study.set_user_attr(name, value)
        elif stored[name] != value:
            diff = _differing_keys(stored[name], value)
            raise ConfigError(f"study {study_name!r} in this storage was created with another "
                              f"{name.replace('_', ' ')} (differs in: {', '.join(diff)}); resume "
                              "it with the same settings or choose another --study / --out")
    n_startup = max(2, min(10, n_trials // 3))
    # Mixed, not added: workers with seeds 1 and 2 must not meet at 1 + 1 == 2 + 0.
    seed = int(np.random.SeedSequence([sampler_seed, len(study.trials)]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    return study


def _differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)] or ["?"]


def _counted(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def tune(
    base: Config,
    space: SearchSpace,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    sampler_seed: int | None = None,
    prune: bool = True,
    prune_warmup: int = 10,
    prune_startup_trials: int = 3,
) -> TuneResult:
    """Search ``space`` around ``base`` until the study holds ``n_trials`` finished trials.

    ``n_trials`` counts completed and pruned trials of the whole study (all sessions, all
    workers), so re-running the same call after an interruption finishes the remaining trials.
    ``timeout`` (seconds) stops this session from starting new trials after that time.
    Writes ``trials.csv``, ``best.yaml``, ``summary.json`` and ``history.png`` into ``out_dir``.
    """
    optuna = require_optuna()
    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    if prune_warmup < 0 or prune_startup_trials < 0:
        raise ConfigError("prune warm-up and start-up trials must be >= 0")
    base = absolute_dataset(base)
    if base["eval_step"] < 1:
        raise ConfigError("a search needs validation: eval_step must be >= 1")
    space.validate(base)
    name = study_name or default_study_name(base, space)
    out = Path(out_dir) if out_dir is not None else Path(base["checkpoint_dir"]) / f"tune-{name}"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    url = storage or f"sqlite:///{out / STUDY_FILE}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(base, space, study_name=name, storage=make_storage(url),
                       sampler_seed=base["seed"] if sampler_seed is None else sampler_seed,
                       prune=prune, prune_warmup=prune_warmup,
                       prune_startup_trials=prune_startup_trials, n_trials=n_trials)
    done_before = _counted(study)
    logger.info("study %r in %s: %d of %d trials done; objective %s (%s) on validation",
                name, url, done_before, n_trials, base["valid_metric"],
                study.direction.name.lower())
    cache = _DataCache()
    counted_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished_here: list[int] = []  # this process's trials (other workers add their own)
    if done_before < n_trials:
        objective = make_objective(base, space, out, cache)
        # Workers stop once the study holds n_trials; parallel ones may overshoot by a trial each.
        study.optimize(objective, timeout=timeout, gc_after_trial=True, callbacks=[
            optuna.study.MaxTrialsCallback(n_trials, states=counted_states),
            lambda _study, trial: (finished_here.append(trial.number)
                                   if trial.state in counted_states else None),
        ])
    session_trials = len(finished_here)

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"study {name!r}: no trial completed (all pruned or failed); see "
                          f"{out / TRIALS_DIR}")
    best = study.best_trial  # chosen on validation scores only
    best_config = Config(base.to_dict(), overrides=best.user_attrs["values"])
    best_run = Path(best.user_attrs["run_dir"])
    logger.info("best trial %d: %s = %.4f; testing its best checkpoint (%s)", best.number,
                base["valid_metric"], best.value, best_run)
    test = evaluate_run(best_run, split="test", data=cache.get(best_config))
    RunFolder(best_run).record_test_metrics(test)
    result = TuneResult(
        study_name=name, storage=url, out_dir=out, direction=study.direction.name.lower(),
        valid_metric=base["valid_metric"], best_trial=best.number, best_value=float(best.value),
        best_params=dict(best.user_attrs["values"]), best_config=best_config,
        best_run_dir=best_run, test=test, trials_this_session=session_trials,
    )
    write_reports(study, result)
    return result


__all__ = ["RUN_SPECIFIC_KEYS", "PruningCallback", "TuneResult", "default_study_name",
           "make_objective", "make_storage", "open_study", "require_optuna", "run_config_dict",
           "tune"]
