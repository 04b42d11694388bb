"""Benchmark one model on one dataset: training speed, evaluation speed, memory; optionally
side by side with the seed reference (RecBole) on the same split files, or to early stop.

Speed (default): in a fresh child process (so peak RSS is this measurement's own), build the
model exactly as ``simkgcl train`` does, run 1 warm-up epoch, then ``--epochs`` measured epochs
through the engine's own ``Trainer.train_epoch`` (training only: validation is timed apart,
once after every epoch, as the trainer does). Reports seconds per epoch and per batch,
seconds per full evaluation of the valid split, training interactions per second, peak RSS
(``VmHWM`` of the child, and ``ru_maxrss`` from ``wait4``, the method used for both systems)
and, on CUDA, peak CUDA memory.

    python bench/run.py --model simkgcl --dataset ../shared/splits/ml-100k --epochs 3 --reference
    python bench/run.py --model lightgcn --dataset lastfm-kg          # bundled name works too
    python bench/run.py --model simkgcl --dataset out/amazon-book-synkg --epochs 1 \\
        --max-batches 40 valid_on_test=true                            # extrapolated, labelled
    python bench/run.py --accuracy --model simkgcl --dataset ../shared/splits/lastfm-kg
    python bench/run.py --device cuda --autocast bf16 ...              # bf16 autocast (GPU)

``--reference`` also runs the model's RecBole 1.2.1 counterpart (after ours, never in parallel) on
the same split folder with the same number of epochs (1 + ``--epochs``; both drop their first
epoch) and the same torch thread count, and prints ours/reference ratios: for ``simkgcl`` the
seed's own SimKGCL (``shared/reference/run.sh``), for any other model RecBole's built-in one
(``shared/reference/run_model.sh MODEL``, RecBole's defaults for its keys; :data:`RECBOLE_MODELS`
maps our names to RecBole's: ``kgin`` -> KGIN, ``mcclk`` -> MCCLK, ``lightgcn`` -> LightGCN ...).
KGAT and NCL are mapped but do not run in the reference environment (no DGL, no faiss): the
bench then keeps our figures, records the reference's error and exits 1. ``--accuracy`` trains to early
stop with ``simkgcl.training.run.train`` and reports test Recall/NDCG@10/20/50, epochs run and
the best epoch (with ``--reference``: the reference's too, same epochs and stopping_step).

Writes a JSON (``bench/results/<name>.json`` or ``--out``) and a markdown table with the exact
command (printed, or appended to ``--markdown FILE``). Trailing ``key=value`` arguments are
config overrides, as for ``simkgcl train``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from simkgcl.memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SIMKGCL_SHARED", REPO / ".." / "shared")).resolve()
RESULTS_DIR = REPO / "bench" / "results"
SEED_REFERENCE = "simkgcl"  # the seed's SimKGCL plug-in (shared/reference/run.sh)
# our model name -> RecBole 1.2.1's built-in model of the same paper (run_model.sh MODEL)
RECBOLE_MODELS = {
    "bpr": "BPR", "lightgcn": "LightGCN", "ngcf": "NGCF", "dgcf": "DGCF", "sgl": "SGL",
    "ncl": "NCL", "simplex": "SimpleX", "kgin": "KGIN", "mcclk": "MCCLK", "kgat": "KGAT",
    "cke": "CKE", "cfkg": "CFKG", "kgcn": "KGCN", "kgnnls": "KGNNLS", "ripplenet": "RippleNet",
    "ktup": "KTUP", "mkr": "MKR",
}
# mapped, but known not to run in shared/reference's environment
RECBOLE_CANNOT_RUN = {"KGAT": "it needs DGL", "NCL": "it needs faiss"}
WARMUP_EPOCHS = 1
ACCURACY_METRICS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50")


# ---------------------------------------------------------------------------------------------
# measurements of this process


def current_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, load, versions, commit."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cpu_model": cpu, "nproc": usable, "cpu_count": os.cpu_count(),
            "torch_threads": threads, "python": platform.python_version(),
            "platform": platform.platform(), "uptime": uptime, "git": commit}


# ---------------------------------------------------------------------------------------------
# child side: speed


class _TimedSampler:
    """Stands in for the NegativeSampler inside the Trainer (a ``simkgcl.sampling.EpochSource``):
    each epoch is cut to ``limit`` batches, and the gap between two batches handed to the
    trainer, one training step (forward, backward, optimiser step), is recorded."""

    def __init__(self, sampler: Any, limit: int | None, sync: Any):
        self.sampler = sampler
        self.limit = limit
        self.sync = sync
        self.batch_seconds: list[float] = []

    def epoch(self, epoch: int) -> Any:
        batches = self.sampler.epoch(epoch).head(self.limit)
        return _timed_batches_type()(batches, self)


@functools.cache
def _timed_batches_type() -> type:
    """An ``EpochBatches`` that times its steps (defined on first use: simkgcl imports lazily,
    so that the child's RSS after imports is measured where it happens)."""
    from simkgcl.sampling import EpochBatches

    class TimedBatches(EpochBatches):
        def __init__(self, batches: EpochBatches, timer: _TimedSampler):
            super().__init__(batches.users, batches.pos_items, batches.neg_items,
                             batches.bounds, batches.shares)
            self.timer = timer

        def __iter__(self) -> Iterator[Any]:
            last = time.perf_counter()
            for batch in super().__iter__():
                yield batch
                self.timer.sync()
                now = time.perf_counter()
                self.timer.batch_seconds.append(now - last)
                last = now

    return TimedBatches


def _autocast(device_type: str, name: str):
    import torch

    if name == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return torch.autocast(device_type, dtype=dtype)


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return {}
    return {"mean": sum(ordered) / n, "median": ordered[n // 2], "min": ordered[0],
            "max": ordered[-1]}


def _config(spec: dict[str, Any]):
    from simkgcl.config import Config

    values = {"model": spec["model"], "dataset": spec["dataset"], "device": spec["device"],
              "show_progress": False}
    return Config(values, overrides=spec["overrides"])


def measure_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child process: time training epochs and evaluations of one model."""
    import logging

    import torch

    torch.set_num_threads(spec["threads"])
    logging.getLogger("simkgcl").setLevel(logging.WARNING)
    from simkgcl.training.components import build_components, load_data
    from simkgcl.training.distributed import resolve_device
    from simkgcl.training.environment import seed_everything
    from simkgcl.training.trainer import Trainer

    rss = {"after_imports": current_rss_mb()}
    config = _config(spec)
    device = resolve_device(config["device"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    seed_everything(config["seed"], config["reproducibility"])

    t0 = time.perf_counter()
    dataset, split = load_data(config)
    load_s = time.perf_counter() - t0
    rss["after_data"] = current_rss_mb()

    t0 = time.perf_counter()
    parts = build_components(config, dataset, split, device)
    sampler = parts.sampler
    valid_task = parts.evaluator.task(split.valid, split.valid_exclusions())
    timed = _TimedSampler(sampler, spec["max_batches"], sync)
    trainer = Trainer(parts.model, config, timed, parts.evaluator, valid_task)
    sync()
    build_s = time.perf_counter() - t0
    rss["after_build"] = current_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    epoch_s: list[float] = []
    epoch_cpu_s: list[float] = []
    eval_s: list[float] = []
    batches_per_epoch: list[int] = []
    losses: list[dict[str, float]] = []
    load_before = load_average()
    for epoch in range(WARMUP_EPOCHS + spec["epochs"]):
        first_batch = len(timed.batch_seconds)
        with _autocast(device.type, spec["autocast"]):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            losses.append(trainer.train_epoch(epoch))
            sync()
            t_train = time.perf_counter() - t0
            c_train = time.process_time() - c0
            t0 = time.perf_counter()
            trainer.validate()
            sync()
            t_eval = time.perf_counter() - t0
        if epoch >= WARMUP_EPOCHS:
            epoch_s.append(t_train)
            epoch_cpu_s.append(c_train)
            eval_s.append(t_eval)
            batches_per_epoch.append(len(timed.batch_seconds) - first_batch)
        else:
            del timed.batch_seconds[first_batch:]  # warm-up batches are not measured
    load_after = load_average()

    n_batches_full = sampler.n_batches
    measured_batches = sum(batches_per_epoch)
    s_per_batch = sum(epoch_s) / measured_batches
    truncated = spec["max_batches"] is not None and spec["max_batches"] < n_batches_full
    s_per_epoch = s_per_batch * n_batches_full if truncated else sum(epoch_s) / len(epoch_s)
    # the least disturbed epoch: the figure to compare when other processes share the cores
    min_epoch = (min(e / b for e, b in zip(epoch_s, batches_per_epoch, strict=True)) * n_batches_full
                 if truncated else min(epoch_s))
    result: dict[str, Any] = {
        "system": "simkgcl",
        "model": config["model"],
        "dataset": dataset.name,
        "dataset_path": config["dataset"],
        "device": str(device),
        "autocast": spec["autocast"],
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "n_entities": dataset.n_entities,
        "n_triples": dataset.n_triples,
        "train_interactions": sampler.n_samples,
        "valid_interactions": len(split.valid),
        "valid_users": valid_task.n_rows_total,
        "batch_size": config["train_batch_size"],
        "batches_per_epoch": n_batches_full,
        "warmup_epochs": WARMUP_EPOCHS,
        "measured_epochs": len(epoch_s),
        "measured_batches_per_epoch": batches_per_epoch,
        "extrapolated": truncated,
        "train_s_per_epoch": s_per_epoch,
        "train_s_per_batch": s_per_batch,
        "train_s_per_epoch_min": min_epoch,
        "batch_s": _stats(timed.batch_seconds),
        "per_epoch_train_s": epoch_s,
        # CPU seconds of this process per wall second while training: about the thread count
        # when the cores were ours, lower when other processes took them (noisy figures)
        "train_cpu_utilisation": sum(epoch_cpu_s) / sum(epoch_s),
        "eval_s": sum(eval_s) / len(eval_s),
        "eval_s_min": min(eval_s),
        "per_epoch_eval_s": eval_s,
        "interactions_per_s": config["train_batch_size"] / s_per_batch
        if truncated else sampler.n_samples / s_per_epoch,
        "load_data_s": load_s,
        "build_s": build_s,
        "losses_per_epoch": losses,
        "rss_mb": {**rss, "at_end": current_rss_mb()},
        "peak_rss_mb": peak_rss_mb(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "config_overrides": spec["overrides"],
        "config": {k: config[k] for k in ("seed", "train_batch_size", "eval_batch_size",
                                          "learning_rate", "topk")},
    }
    marker = Path(config["dataset"]) / "SYNTHETIC_KG.txt"
    if marker.is_file():  # bench/make_synthetic_kg.py output: say so wherever figures appear
        result["synthetic_kg"] = marker.read_text().strip()
    if cuda:
        result["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_cuda_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
        result["cuda_device"] = torch.cuda.get_device_name(device)
    if spec.get("profile"):
        result["profile_file"] = _profile(trainer, timed, spec, device)
    return result


def _profile(trainer: Any, timed: _TimedSampler, spec: dict[str, Any], device: Any) -> str:
    """torch.profiler over ``--profile`` batches and one evaluation; writes the op table."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    saved_limit = timed.limit
    timed.limit = spec["profile"]
    with (profile(activities=activities, profile_memory=True) as prof,
          _autocast(device.type, spec["autocast"])):
        trainer.train_epoch(10_000)
    train_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    with (profile(activities=activities, profile_memory=True) as prof_eval,
          _autocast(device.type, spec["autocast"]), torch.no_grad()):
        trainer.validate()
    eval_table = prof_eval.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    timed.limit = saved_limit
    path = Path(spec["profile_out"])
    path.write_text(f"# training, {spec['profile']} batches\n{train_table}\n\n"
                    f"# one evaluation of the valid split\n{eval_table}\n")
    return str(path)


# ---------------------------------------------------------------------------------------------
# child side: accuracy


def measure_accuracy(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child process: train to early stop, test the best model."""
    import logging

    import torch

    torch.set_num_threads(spec["threads"])
    logging.getLogger("simkgcl").setLevel(logging.WARNING)
    from simkgcl.training.distributed import resolve_device
    from simkgcl.training.run import train
    from simkgcl.training.run_folder import RunFolder

    config = _config(spec)
    if spec["epochs_given"]:
        config = config.replace(epochs=spec["epochs"])
    config = config.replace(checkpoint_dir=spec["runs_dir"])
    t0 = time.perf_counter()
    with _autocast(resolve_device(config["device"]).type, spec["autocast"]):
        run = train(config)
    wall = time.perf_counter() - t0
    summary = RunFolder(run.run_dir).read_results()
    return {
        "system": "simkgcl",
        "model": config["model"],
        "dataset": summary["dataset"],
        "dataset_path": config["dataset"],
        "device": summary["device"],
        "autocast": spec["autocast"],
        "test": run.test,
        "best_valid": run.best_valid,
        "valid_metric": run.valid_metric,
        "best_epoch": run.best_epoch,
        "epochs_run": run.epochs_run,
        "stopped_early": run.stopped_early,
        "max_epochs": config["epochs"],
        "stopping_step": config["stopping_step"],
        "train_s_per_epoch": summary["seconds_per_epoch"],
        "eval_s": summary["seconds_per_eval"],
        "wall_s": wall,
        "run_dir": str(run.run_dir),
        "peak_rss_mb": peak_rss_mb(),
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "config_overrides": spec["overrides"],
    }


def _child_main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = measure_accuracy(spec) if spec["mode"] == "accuracy" else measure_speed(spec)
    Path(out_path).write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------
# parent side: processes


_last_usage: dict[str, float] = {}


def _run_child(cmd: list[str], threads: int, log_path: Path, timeout: float | None,
               cwd: Path | None = None) -> tuple[int, float, float]:
    """Run ``cmd`` with the thread count fixed; return (exit code, wall s, peak RSS MiB from
    ``wait4``, i.e. the child and the descendants it waited for)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONPATH", "")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        # its own process group, so that a timeout or an interrupted bench ends the child and
        # everything it started (run.sh -> python), and nothing else
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)

        def end_group() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, end_group) if timeout else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            end_group()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    _last_usage.update(cpu_s=usage.ru_utime + usage.ru_stime, wall_s=wall)
    return proc.returncode, wall, usage.ru_maxrss / 1024


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_ours(spec: dict[str, Any], workdir: Path, timeout: float | None) -> dict[str, Any]:
    """Our measurement in a fresh interpreter."""
    spec_path, out_path, log_path = (workdir / "ours-spec.json", workdir / "ours.json",
                                     workdir / "ours.log")
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_path),
           str(out_path)]
    code, wall, wait4_rss = _run_child(cmd, spec["threads"], log_path, timeout)
    if code != 0 or not out_path.exists():
        raise SystemExit(f"our measurement failed (exit {code}); last lines of {log_path}:\n"
                         f"{_tail(log_path)}")
    result = json.loads(out_path.read_text())
    result.update(process_wall_s=wall, peak_rss_mb_wait4=wait4_rss,
                  process_cpu_utilisation=_last_usage["cpu_s"] / wall)
    return result


def reference_split_name(dataset: str) -> str:
    """The reference runs only on ``shared/splits/<name>``: map our dataset argument to it."""
    path = Path(dataset).expanduser()
    splits = (SHARED / "splits").resolve()
    if path.exists():
        if path.resolve().parent != splits:
            raise SystemExit(f"--reference needs a split folder under {splits} (the reference "
                             f"reads only those); got {dataset}")
        return path.resolve().name
    if (splits / dataset).is_dir():
        return dataset
    raise SystemExit(f"--reference: no split folder {splits / dataset}")


def reference_model(model: str) -> str | None:
    """RecBole's name of our ``model`` (None: the seed's SimKGCL); SystemExit if it has none."""
    key = model.lower()
    if key == SEED_REFERENCE:
        return None
    if key not in RECBOLE_MODELS:
        raise SystemExit(f"--reference: RecBole 1.2.1 has no counterpart of {model!r}; mapped: "
                         f"{', '.join(sorted([SEED_REFERENCE, *RECBOLE_MODELS]))}")
    return RECBOLE_MODELS[key]


def reference_label(recbole_model: str | None) -> str:
    return "SimKGCL (seed)" if recbole_model is None else recbole_model


def run_reference(name: str, epochs: int, threads: int, workdir: Path, timeout: float | None,
                  stopping_step: int | None = None,
                  recbole_model: str | None = None) -> dict[str, Any]:
    """The reference (RecBole) on the same split folder, in its own process: the seed's SimKGCL
    (``recbole_model`` None) or RecBole's built-in ``recbole_model``."""
    out_path, log_path = workdir / "reference.json", workdir / "reference.log"
    if recbole_model is None:
        cmd = ["bash", str(SHARED / "reference" / "run.sh"), name]
    else:
        cmd = ["bash", str(SHARED / "reference" / "run_model.sh"), recbole_model, name]
    cmd += [str(epochs), str(out_path), "--threads", str(threads),
            "--work-dir", str(workdir / "reference-work")]
    if stopping_step is not None:
        cmd += ["--stopping-step", str(stopping_step)]
    code, wall, wait4_rss = _run_child(cmd, threads, log_path, timeout)
    if code != 0 or not out_path.exists():
        known = RECBOLE_CANNOT_RUN.get(recbole_model or "")
        reason = f" ({recbole_model} does not run in the reference environment: {known})" \
            if known else ""
        raise SystemExit(f"the reference failed (exit {code}){reason}; last lines of "
                         f"{log_path}:\n{_tail(log_path)}")
    result = json.loads(out_path.read_text())
    result.update(command=shlex.join(cmd), process_wall_s=wall, peak_rss_mb_wait4=wait4_rss,
                  process_cpu_utilisation=_last_usage["cpu_s"] / wall,
                  reference_label=reference_label(recbole_model))
    return result


# ---------------------------------------------------------------------------------------------
# comparison and reporting


def reference_speed(ref: dict[str, Any], warmup: int = WARMUP_EPOCHS) -> dict[str, Any]:
    """The reference's figures treated as ours are: its first ``warmup`` epochs dropped."""
    train_s = ref["per_epoch_train_s"]
    eval_s = [e for e in ref["per_epoch_valid_eval_s"] if e is not None]
    kept_train = train_s[warmup:] or train_s
    kept_eval = eval_s[warmup:] or eval_s
    batches = ref.get("recbole_stats", {}).get("train_batches_per_epoch")
    s_epoch = sum(kept_train) / len(kept_train)
    return {
        "train_s_per_epoch": s_epoch,
        "train_s_per_batch": s_epoch / batches if batches else None,
        "train_s_per_epoch_min": min(kept_train),
        "eval_s": sum(kept_eval) / len(kept_eval) if kept_eval else None,
        "eval_s_min": min(kept_eval) if kept_eval else None,
        "batches_per_epoch": batches,
        "measured_epochs": len(kept_train),
        "peak_rss_mb": ref["peak_rss_mb"],
        "peak_rss_mb_wait4": ref.get("peak_rss_mb_wait4"),
        "train_s_per_epoch_all_epochs": ref.get("mean_train_s"),
    }


def speed_ratios(ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    """ours / reference (below 1 = ours faster or smaller). RSS uses one method for both:
    ``wait4``'s ``ru_maxrss`` when both have it."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    rss_key = ("peak_rss_mb_wait4" if ours.get("peak_rss_mb_wait4") and
               ref.get("peak_rss_mb_wait4") else "peak_rss_mb")
    return {
        "train_s_per_epoch": ratio(ours["train_s_per_epoch"], ref["train_s_per_epoch"]),
        "eval_s": ratio(ours["eval_s"], ref["eval_s"]),
        # least disturbed epoch / evaluation of each: steadier when the machine is busy
        "train_s_per_epoch_min": ratio(ours.get("train_s_per_epoch_min"),
                                       ref.get("train_s_per_epoch_min")),
        "eval_s_min": ratio(ours.get("eval_s_min"), ref.get("eval_s_min")),
        "peak_rss_mb": ratio(ours[rss_key], ref[rss_key]),
        "rss_method": rss_key,  # type: ignore[dict-item]
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _separator(head: str) -> str:
    return "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"


def speed_markdown(report: dict[str, Any]) -> str:
    ours = report["ours"]
    head = ("| system | model | dataset | device | threads | batches/epoch | train s/epoch | "
            "s/batch | eval s (valid) | peak RSS MB | peak CUDA MB | interactions/s | load avg | "
            "CPU use |")
    lines = [head, _separator(head)]
    epoch_cell = _fmt(ours["train_s_per_epoch"])
    if ours.get("extrapolated"):
        epoch_cell += f" (extrapolated from {sum(ours['measured_batches_per_epoch'])} batches)"
    dataset_cell = ours["dataset"] + (" (SYNTHETIC KG)" if ours.get("synthetic_kg") else "")
    lines.append(
        f"| ours | {ours['model']} | {dataset_cell} | {ours['device']}"
        f"{'' if ours['autocast'] == 'none' else ' ' + ours['autocast']} | "
        f"{ours['torch_num_threads']} | {ours['batches_per_epoch']} | {epoch_cell} | "
        f"{_fmt(ours['train_s_per_batch'])} | {_fmt(ours['eval_s'])} | "
        f"{_fmt(ours.get('peak_rss_mb_wait4') or ours['peak_rss_mb'])} | "
        f"{_fmt(ours.get('peak_cuda_allocated_mb'))} | {_fmt(ours['interactions_per_s'])} | "
        f"{ours['load_average_before'][0] if ours['load_average_before'] else '-'} | "
        f"{ours['train_cpu_utilisation']:.2f} |")
    ref = report.get("reference")
    if ref:
        r = report["reference_speed"]
        lines.append(
            f"| reference (RecBole) | {ref.get('reference_label', 'SimKGCL (seed)')} | "
            f"{ref['dataset']} | cpu | "
            f"{ref['torch_num_threads']} | {r['batches_per_epoch']} | "
            f"{_fmt(r['train_s_per_epoch'])} | {_fmt(r['train_s_per_batch'])} | "
            f"{_fmt(r['eval_s'])} | {_fmt(r['peak_rss_mb_wait4'] or r['peak_rss_mb'])} | - | "
            f"{_fmt(ref['recbole_stats']['train_inter'] / r['train_s_per_epoch'])} | "
            f"{report.get('load_average_between', ['-'])[0]} | "
            f"{_fmt(ref.get('process_cpu_utilisation'))} (whole run) |")
        q = report["ratios"]
        lines.append(
            f"| **ours / reference** | | | | | | **{_fmt(q['train_s_per_epoch'])}** "
            f"({_fmt(1 / q['train_s_per_epoch'] if q['train_s_per_epoch'] else None)}x faster) "
            f"| | **{_fmt(q['eval_s'])}** "
            f"({_fmt(1 / q['eval_s'] if q['eval_s'] else None)}x faster) | "
            f"**{_fmt(q['peak_rss_mb'])}** | | | | |")
        lines.append(
            f"| ours / reference, least disturbed epoch | | | | | | "
            f"{_fmt(q['train_s_per_epoch_min'])} (min {_fmt(ours['train_s_per_epoch_min'])} vs "
            f"{_fmt(r['train_s_per_epoch_min'])}) | | {_fmt(q['eval_s_min'])} | | | | | |")
    lines.append("")
    lines.append(f"Command: `{report['command']}`  ")
    lines.append(f"Machine: {report['machine']['cpu_model']}, {report['machine']['nproc']} "
                 f"cores, torch {ours['torch_version']}, {ours['torch_num_threads']} threads; "
                 f"`{report['machine']['uptime']}`; mean over {ours['measured_epochs']} epochs "
                 f"after {ours['warmup_epochs']} warm-up epoch; load avg = 1-min load before "
                 f"the run; CPU use = CPU s per wall s (threads busy; low = cores taken by "
                 f"other processes).")
    return "\n".join(lines) + "\n"


def accuracy_markdown(report: dict[str, Any]) -> str:
    head = ("| system | model | dataset | Recall@10 | Recall@20 | Recall@50 | NDCG@10 | NDCG@20 | "
            "NDCG@50 | epochs run | best epoch | train s/epoch |")
    lines = [head, _separator(head)]
    ours = report["ours"]
    test = {k.lower(): v for k, v in ours["test"].items()}
    lines.append(
        f"| ours | {ours['model']}{'' if ours['autocast'] == 'none' else ' ' + ours['autocast']}"
        f" | {ours['dataset']} | "
        + " | ".join(_fmt(test.get(m), 4) for m in ACCURACY_METRICS)
        + f" | {ours['epochs_run']} | {ours['best_epoch']} | {_fmt(ours['train_s_per_epoch'])} |")
    ref = report.get("reference")
    if ref:
        test = {k.lower(): v for k, v in (ref.get("test_result") or {}).items()}
        lines.append(
            f"| reference (RecBole) | {ref.get('reference_label', 'SimKGCL (seed)')} | "
            f"{ref['dataset']} | "
            + " | ".join(_fmt(test.get(m), 4) for m in ACCURACY_METRICS)
            + f" | {ref['epochs_run']} | {ref['best_epoch']} | {_fmt(ref['mean_train_s'])} |")
    lines.append("")
    lines.append(f"Command: `{report['command']}`  ")
    lines.append(f"Machine: {report['machine']['cpu_model']}, {report['machine']['nproc']} "
                 f"cores, {ours['torch_num_threads']} torch threads; "
                 f"`{report['machine']['uptime']}`.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# command line


def _dataset_label(dataset: str) -> str:
    path = Path(dataset).expanduser()
    return path.resolve().name if path.exists() else dataset


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="simkgcl")
    p.add_argument("--dataset", default="lastfm-kg", help="dataset folder or bundled name")
    p.add_argument("--epochs", type=int, default=None,
                   help="speed: measured epochs after 1 warm-up (default 3); accuracy: maximum "
                        "epochs (default: the config's)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="speed: train only this many batches per epoch and extrapolate the "
                        "epoch time (labelled 'extrapolated')")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every process")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--autocast", choices=("none", "bf16", "fp16"), default="none",
                   help="run training and evaluation under torch.autocast with this dtype")
    p.add_argument("--accuracy", action="store_true", help="train to early stop; test metrics")
    p.add_argument("--reference", action="store_true",
                   help="also run the model's RecBole counterpart afterwards (simkgcl: the "
                        "seed's, shared/reference/run.sh; others: run_model.sh MODEL)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="speed: also torch.profiler N batches + one evaluation (op table file)")
    p.add_argument("--name", help="result name (default <mode>-<model>-<dataset>-<device>)")
    p.add_argument("--out", help="JSON result path (default bench/results/<name>.json)")
    p.add_argument("--markdown", help="append the markdown table to this file (default: print)")
    p.add_argument("--runs-dir", default=None,
                   help="accuracy: folder for run folders (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per child process")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = p.parse_args(argv)
    for o in args.overrides:
        if "=" not in o:
            p.error(f"expected key=value, got {o!r}")
    if args.reference and args.model.lower() not in (SEED_REFERENCE, *RECBOLE_MODELS):
        p.error(f"--reference: RecBole 1.2.1 has no counterpart of {args.model!r}; mapped: "
                f"{', '.join(sorted([SEED_REFERENCE, *RECBOLE_MODELS]))}")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.max_batches is not None and args.max_batches < 1:
        p.error("--max-batches must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) == 3 and argv[0] == "--_child":
        _child_main(argv[1], argv[2])
        return {}
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    mode = "accuracy" if args.accuracy else "speed"
    label = _dataset_label(args.dataset)
    suffix = "" if args.autocast == "none" else f"-{args.autocast}"
    name = args.name or f"{mode}-{args.model}-{label}-{args.device.replace(':', '')}{suffix}"
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"{name}.json"
    epochs = args.epochs if args.epochs is not None else 3
    dataset = args.dataset
    if Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())
    ref_name = reference_split_name(args.dataset) if args.reference else None
    ref_model = reference_model(args.model) if args.reference else None
    command = "python bench/run.py " + shlex.join(list(argv))
    machine = machine_info(args.threads)

    with tempfile.TemporaryDirectory(prefix="simkgcl-bench-") as tmp:
        workdir = Path(tmp)
        spec = {"mode": mode, "model": args.model, "dataset": dataset, "device": args.device,
                "overrides": list(args.overrides), "threads": args.threads, "epochs": epochs,
                "epochs_given": args.epochs is not None, "max_batches": args.max_batches,
                "autocast": args.autocast, "profile": args.profile,
                "profile_out": str(out_path.with_suffix(".profile.txt")),
                "runs_dir": args.runs_dir or str(workdir / "runs")}
        if args.profile:
            out_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"[bench] {mode}: {args.model} on {label} ({args.device}, {args.threads} threads)",
              file=sys.stderr)
        ours = run_ours(spec, workdir, args.timeout)
        report: dict[str, Any] = {"name": name, "mode": mode, "command": command,
                                  "machine": machine, "ours": ours}
        if ref_name is not None:
            report["load_average_between"] = load_average()
            if mode == "speed":
                ref_epochs = WARMUP_EPOCHS + epochs
                stopping = None
            else:
                ref_epochs, stopping = _accuracy_limits(ours)
            print(f"[bench] reference: {reference_label(ref_model)} (RecBole) on {ref_name}, "
                  f"{ref_epochs} epochs", file=sys.stderr)
            try:
                report["reference"] = run_reference(ref_name, ref_epochs, args.threads,
                                                    workdir, args.timeout, stopping, ref_model)
            except SystemExit as exc:  # failed, timed out or terminated: keep our figures
                report["reference_error"] = str(exc)
                print(f"[bench] {exc}", file=sys.stderr)
            if mode == "speed" and "reference" in report:
                report["reference_speed"] = reference_speed(report["reference"])
                report["ratios"] = speed_ratios(ours, report["reference_speed"])
        report["machine"]["uptime_after"] = machine_info(args.threads)["uptime"]

    markdown = speed_markdown(report) if mode == "speed" else accuracy_markdown(report)
    report["markdown"] = markdown
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + markdown)
    else:
        print(markdown)
    print(f"[bench] wrote {out_path}", file=sys.stderr)
    return report


def cli() -> int:
    """Exit status 1 when a requested reference run did not complete (our figures are kept)."""
    report = main()
    return 1 if report.get("reference_error") else 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"bench: terminated by signal {signum}")


def _accuracy_limits(ours: dict[str, Any]) -> tuple[int, int]:
    """The reference gets our maximum epochs and patience."""
    return int(ours["max_epochs"]), int(ours["stopping_step"])


if __name__ == "__main__":
    sys.exit(cli())
