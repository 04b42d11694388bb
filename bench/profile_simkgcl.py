"""Profile SimKGCL training batches on CPU (or CUDA): where the time and the memory go.

Builds the model, sampler and optimizer exactly as ``simkgcl train`` does, then times each
phase of a batch (sampling, forward, backward, optimizer step) in wall and CPU seconds, prints
the resident memory after each setup stage, and (``--profile``) a torch.profiler op table.
CPU seconds per batch are the figure to compare when other processes share the cores: wall
time then depends on who else runs, CPU time far less.

    python bench/profile_simkgcl.py --dataset ../shared/splits/lastfm-kg --batches 30
    python bench/profile_simkgcl.py --dataset ../shared/splits/lastfm-kg --profile 10
    python bench/profile_simkgcl.py --dataset out/amazon-book-synkg --batches 5 \\
        valid_on_test=true
    python bench/profile_simkgcl.py --dataset ../shared/splits/lastfm-kg --compile

Trailing ``key=value`` arguments are config overrides, as for ``simkgcl train``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    """Current resident memory (MiB)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="simkgcl")
    p.add_argument("--batches", type=int, default=20, help="measured batches (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", type=int, default=0, help="torch.profiler over this many batches")
    p.add_argument("--rows", type=int, default=25, help="rows of the profiler table")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    stages = {"start": rss_mb()}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    stages["import torch"] = rss_mb()
    from simkgcl.config import Config
    from simkgcl.graph import build_graph
    from simkgcl.models import get_model_class
    from simkgcl.sampling.negative import NegativeSampler
    from simkgcl.training.environment import seed_everything
    from simkgcl.training.run import load_data, resolve_device

    stages["import simkgcl"] = rss_mb()
    config = Config({"model": args.model, "dataset": args.dataset, "device": args.device,
                     "show_progress": False}, overrides=args.overrides)
    device = resolve_device(config["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seed_everything(config["seed"], config["reproducibility"])
    dataset, split = load_data(config)
    stages["data loaded"] = rss_mb()
    graph = build_graph(dataset, split).to(device)
    stages["graph built"] = rss_mb()
    t0 = time.perf_counter()
    model = get_model_class(config["model"])(graph, config).to(device)
    build_s = time.perf_counter() - t0
    stages["model built"] = rss_mb()
    sampler = NegativeSampler(split.train.users, split.train.items, dataset.n_items,
                              batch_size=config["train_batch_size"], seed=config["seed"],
                              num_negatives=config["neg_sampling"]["uniform"], device=device)
    stages["sampler built"] = rss_mb()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    step_module = model
    compile_s = None
    if args.compile:
        step_module = torch.compile(model)
    model.train()

    def batches():
        epoch = 0
        while True:
            yield from sampler.epoch(epoch)
            epoch += 1

    phases: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("sample", "forward", "backward", "step", "total")}
    stream = batches()

    def one_batch(record: bool) -> None:
        marks = [(time.perf_counter(), time.process_time())]
        users, pos, neg = next(stream)
        marks.append((time.perf_counter(), time.process_time()))
        optimizer.zero_grad(set_to_none=True)
        terms = step_module(users, pos, neg)
        loss = sum(terms.values())
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        loss.backward()
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        optimizer.step()
        sync()
        marks.append((time.perf_counter(), time.process_time()))
        if record:
            names = ("sample", "forward", "backward", "step")
            for name, a, b in zip(names, marks[:-1], marks[1:], strict=True):
                phases[name].append((b[0] - a[0], b[1] - a[1]))
            phases["total"].append((marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]))

    t0 = time.perf_counter()
    for i in range(args.warmup):
        one_batch(False)
        if i == 0 and args.compile:
            compile_s = time.perf_counter() - t0
    stages["after warm-up"] = rss_mb()
    for _ in range(args.batches):
        one_batch(True)
    stages["after measured batches"] = rss_mb()

    print(f"simkgcl profile: {args.dataset} on {device}, {torch.get_num_threads()} threads, "
          f"batch {config['train_batch_size']}, {sampler.n_batches} batches/epoch")
    print(f"model build {build_s:.2f} s" + (f", compile+first batch {compile_s:.1f} s"
                                           if compile_s is not None else ""))
    print(f"{'phase':<10}{'wall med s':>12}{'wall min s':>12}{'cpu med s':>12}")
    summary = {}
    for name, values in phases.items():
        walls = [w for w, _ in values]
        cpus = [c for _, c in values]
        summary[name] = {"wall_median": statistics.median(walls), "wall_min": min(walls),
                         "cpu_median": statistics.median(cpus)}
        print(f"{name:<10}{summary[name]['wall_median']:>12.4f}{min(walls):>12.4f}"
              f"{summary[name]['cpu_median']:>12.4f}")
    print("RSS (MiB) after each stage: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    print(f"peak RSS {peak_rss_mb():.0f} MiB")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities, profile_memory=True) as prof:
            for _ in range(args.profile):
                one_batch(False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return {"phases": summary, "rss_mb": stages, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    main()
