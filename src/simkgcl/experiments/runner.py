"""Running an experiment: every (dataset, model, seed) as an ordinary run folder, resumable.

Each run trains in its own folder ``<out>/runs/<dataset>/<model>/seed-<seed>/`` (its
``checkpoint_dir``; the run folder ``<model>-<dataset>-<time>`` is created inside it), so the same
command finds its runs again: a ``done`` run is skipped, a ``resumable`` one is continued by
``resume_run`` exactly where its last checkpoint left it (the same result as if never stopped),
and a run killed before its first checkpoint is started afresh (its folder, with nothing worth
keeping, is removed). A run found with settings other than the experiment's now is an error, not
silently mixed in: changing the experiment needs a new ``--out`` folder (or deleting that run).

``jobs`` > 1 trains that many runs at once, each in a fresh process (spawned, so no forked torch
state) with ``threads`` set so that jobs × threads ≤ the machine's cores. A worker dies with the
command (Linux: parent-death signal) and holds a lock on its run folder while it trains, so a
re-run never trains the same run twice at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from simkgcl.config import Config
from simkgcl.errors import ArtifactError, ConfigError, SimKGCLError
from simkgcl.experiments.collect import run_state
from simkgcl.experiments.spec import EXPERIMENT_COPY, Experiment, describe
from simkgcl.training.checkpoint import atomic_write_bytes
from simkgcl.training.run import resume_run, train
from simkgcl.training.run_folder import RunFolder, safe_path_part

logger = logging.getLogger("simkgcl.experiments")

RUNS_DIR = "runs"
LOCK_FILE = ".lock"
# Keys that do not change what a run computes: a found run may differ in them.
IGNORED_KEYS = frozenset({"threads", "show_progress", "device", "eval_batch_size",
                          "checkpoint_dir", "test_per_user", "user_groups",
                          "user_group_quantiles"})
RESUME_KEYS = ("threads", "show_progress", "device", "eval_batch_size")


@dataclass(frozen=True)
class RunJob:
    """One (dataset, model, seed) run of an experiment: where it lives and its settings."""

    dataset: str
    label: str
    seed: int
    folder: str  # the run's checkpoint_dir
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.label}/seed {self.seed}"


@dataclass
class RunOutcome:
    job: RunJob
    status: str  # "skipped" (already done), "trained", "resumed" or "failed"
    run_dir: str | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class ExperimentRun:
    """What one ``compare`` session did."""

    out_dir: Path
    jobs: list[RunJob]
    outcomes: list[RunOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def run_folder(out_dir: Path, dataset: str, label: str, seed: int) -> Path:
    return out_dir / RUNS_DIR / safe_path_part(dataset) / safe_path_part(label) / f"seed-{seed}"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan(experiment: Experiment, out_dir: Path, jobs: int = 1,
         cores: int | None = None) -> list[RunJob]:
    """Every run of the experiment, datasets outermost, then models, then seeds."""
    cores = cores or available_cores()
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if jobs > cores:
        raise ConfigError(f"--jobs {jobs} is more than the {cores} CPU cores available")
    planned = []
    for dataset in experiment.datasets:
        for model in experiment.models:
            for seed in experiment.seeds:
                folder = run_folder(out_dir, dataset.label, model.label, seed)
                values = experiment.run_config(dataset, model, seed, folder).to_dict()
                threads = values.get("threads")
                if jobs > 1 and threads is None:
                    values["threads"] = max(1, cores // jobs)
                elif jobs > 1 and jobs * threads > cores:
                    raise ConfigError(f"--jobs {jobs} × threads {threads} ({model.label} on "
                                      f"{dataset.label}) is more than the {cores} CPU cores; "
                                      "lower one of them")
                planned.append(RunJob(dataset.label, model.label, seed, str(folder), values))
    return planned


def locate(folder: Path) -> tuple[str, Path | None]:
    """The most advanced run folder inside a run's ``checkpoint_dir`` and its state."""
    if not folder.is_dir():
        return "new", None
    found = [d for d in folder.iterdir() if d.is_dir() and RunFolder.is_run_folder(d)]
    for state in ("done", "resumable"):
        matching = [d for d in found if run_state(d) == state]
        if matching:
            return state, max(matching, key=lambda d: d.stat().st_mtime)
    return ("started", found[0]) if found else ("new", None)


def settings_mismatch(run_dir: Path, wanted: dict[str, Any]) -> list[str]:
    """Keys (outside :data:`IGNORED_KEYS`) whose saved value differs from ``wanted``."""
    saved = RunFolder(run_dir).read_config().to_dict()
    return [f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}"
            for key in sorted(set(saved) | set(wanted))
            if key not in IGNORED_KEYS and saved.get(key) != wanted.get(key)]


def check_found_runs(jobs: Sequence[RunJob]) -> dict[tuple[str, str, int], str]:
    """State of every job (``new``/``started``/``resumable``/``done``); raises if a found run
    was made with other settings than the experiment's."""
    states = {}
    for job in jobs:
        state, run_dir = locate(Path(job.folder))
        if run_dir is not None and state in ("done", "resumable"):
            diff = settings_mismatch(run_dir, job.config)
            if diff:
                raise ArtifactError(f"{run_dir}: this run of {job.name} was made with other "
                                    f"settings than the experiment's ({'; '.join(diff[:3])}); "
                                    "use another --out folder or delete the run's folder")
        states[job.dataset, job.label, job.seed] = state
    return states


@contextlib.contextmanager
def _folder_lock(folder: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``: wait for the process that holds it (a run still
    being trained), or (``wait=False``) refuse at once (a second ``compare`` on one folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(folder / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise ArtifactError(f"{folder}: another simkgcl compare is running on this "
                                    "folder") from None
            logger.warning("%s: another process is training this run; waiting for it", folder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def execute(job: RunJob, callbacks: Sequence[Callable[[dict[str, Any]], Any]] = ()
            ) -> RunOutcome:
    """Train, resume or skip one run (whatever its folder says), under the folder's lock."""
    folder = Path(job.folder)
    t0 = time.perf_counter()
    with _folder_lock(folder):
        state, run_dir = locate(folder)
        try:
            if state == "done":
                return RunOutcome(job, "skipped", str(run_dir))
            if state == "resumable":
                assert run_dir is not None
                overrides = {k: job.config[k] for k in RESUME_KEYS}
                result = resume_run(run_dir, overrides=overrides, callbacks=callbacks)
                status = "resumed"
            else:
                if run_dir is not None:  # killed before its first checkpoint: start afresh
                    shutil.rmtree(run_dir)
                result = train(Config(job.config), callbacks=callbacks)
                status = "trained"
        except SimKGCLError as exc:
            return RunOutcome(job, "failed", None if run_dir is None else str(run_dir),
                              time.perf_counter() - t0, str(exc))
    return RunOutcome(job, status, str(result.run_dir), time.perf_counter() - t0)


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: end this process when the ``compare`` process ends (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class _Progress:
    """Overall progress: a bar with ETA on a terminal, one line per finished run otherwise."""

    def __init__(self, pending: Sequence[RunJob], total: int, enabled: bool, workers: int):
        self.total = total
        self.finished = total - len(pending)
        self.workers = workers
        self.left = list(pending)  # runs this session still has to finish
        self.durations: dict[str, list[float]] = {}  # per model label
        self.running: dict[str, str] = {}
        self.bar = tqdm(total=total, initial=self.finished, unit="run", desc="compare",
                        dynamic_ncols=True, disable=not enabled, file=sys.stderr)

    def eta_seconds(self) -> float | None:
        """Seconds left: each remaining run costs the mean time of the same model's runs this
        session (models differ by orders of magnitude), else of all runs; over the workers."""
        every = [d for ds in self.durations.values() for d in ds]
        if not every:
            return None
        overall = sum(every) / len(every)
        total = sum(sum(self.durations[j.label]) / len(self.durations[j.label])
                    if self.durations.get(j.label) else overall for j in self.left)
        return total / min(self.workers, max(1, len(self.left)))

    def show_running(self) -> None:
        self.bar.set_postfix_str(", ".join(f"{n} {s}".strip() for n, s in self.running.items()),
                                 refresh=True)

    def epoch(self, job: RunJob, epoch: int) -> None:
        self.running[job.name] = f"epoch {epoch}"
        self.show_running()

    def done(self, outcome: RunOutcome) -> None:
        self.running.pop(outcome.job.name, None)
        self.finished += 1
        if outcome.job in self.left:
            self.left.remove(outcome.job)
        if outcome.status == "trained":  # a resumed run's time says little about a full one
            self.durations.setdefault(outcome.job.label, []).append(outcome.seconds)
        eta = self.eta_seconds() if self.left else None
        line = (f"[{self.finished}/{self.total}] {outcome.job.name}: {outcome.status} in "
                f"{_duration(outcome.seconds)}"
                + (f"; about {_duration(eta)} left" if eta is not None else "")
                + (f" ({outcome.message})" if outcome.message else ""))
        if self.bar.disable:
            logger.info("%s", line)
        else:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
            self.show_running()

    def close(self) -> None:
        self.bar.close()


def run_experiment(experiment: Experiment, out_dir: str | Path, *, jobs: int = 1,
                   progress: bool | None = None) -> ExperimentRun:
    """Bring every run of ``experiment`` in ``out_dir`` to ``done`` (see the module docstring).

    ``progress`` None shows a bar when stderr is a terminal. Failed runs are reported in the
    outcomes (and tried again by the next call); finished runs are never trained again.
    """
    out = Path(out_dir)
    planned = plan(experiment, out, jobs)
    states = check_found_runs(planned)
    with _folder_lock(out, wait=False):
        atomic_write_bytes(out / EXPERIMENT_COPY,
                           yaml.safe_dump(describe(experiment), sort_keys=False).encode())
        return _run_all(experiment, out, planned, states, jobs, progress)


def _run_all(experiment: Experiment, out: Path, planned: list[RunJob],
             states: dict[tuple[str, str, int], str], jobs: int,
             progress: bool | None) -> ExperimentRun:
    session = ExperimentRun(out, planned)
    pending = [j for j in planned if states[j.dataset, j.label, j.seed] != "done"]
    session.outcomes += [RunOutcome(j, "skipped") for j in planned if j not in pending]
    logger.info("experiment %s: %d runs, %d done already, %d to train or resume (%s)",
                experiment.name, len(planned), len(planned) - len(pending), len(pending),
                f"{jobs} at a time" if jobs > 1 else "one at a time")
    enabled = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(pending, len(planned), enabled, max(1, jobs))
    try:
        if jobs == 1:
            for job in pending:
                bar.epoch(job, 0)
                outcome = execute(job, [lambda rec, job=job: bar.epoch(job, rec["epoch"] + 1)])
                session.outcomes.append(outcome)
                bar.done(outcome)
        else:
            session.outcomes += _run_parallel(pending, jobs, bar)
    finally:
        bar.close()
    return session


def _epochs_so_far(job: RunJob) -> int:
    state, run_dir = locate(Path(job.folder))
    if run_dir is None or not RunFolder(run_dir).metrics_path.is_file():
        return 0
    return sum(1 for line in RunFolder(run_dir).metrics_path.read_text().splitlines() if line.strip())


def _run_parallel(pending: Sequence[RunJob], jobs: int, bar: _Progress) -> list[RunOutcome]:
    outcomes = []
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures: dict[Future, RunJob] = {pool.submit(execute, job): job for job in pending}
        waiting = set(futures)
        started = time.perf_counter()
        while waiting:
            finished, waiting = wait(waiting, timeout=2.0, return_when=FIRST_COMPLETED)
            for future in finished:
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # a worker that crashed: report, keep the others
                    outcome = RunOutcome(job, "failed", None, time.perf_counter() - started,
                                         f"{type(exc).__name__}: {exc}")
                outcomes.append(outcome)
                bar.done(outcome)
            running = [futures[f] for f in waiting if f.running()]
            for job in running[:jobs]:
                bar.epoch(job, _epochs_so_far(job))
    return outcomes


__all__ = ["ExperimentRun", "RunJob", "RunOutcome", "execute", "locate", "plan",
           "run_experiment", "run_folder", "settings_mismatch"]
