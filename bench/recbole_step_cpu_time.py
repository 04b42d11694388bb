"""CPU seconds per training step of a RecBole 1.2.1 built-in model, to set beside
``bench/step_cpu_time.py`` (ours) on a shared machine, where CPU time moves less than wall time.

The model is built on ``../shared/splits/<split>`` as its trainer would (``recbole_bridge``);
a step is ``calculate_loss`` + ``backward`` on RecBole's first training batch (shuffled, 2048
rows, one negative each), no optimiser step, the model in training mode (SGL's augmented graphs
are drawn once, by ``model.train()``; their per-epoch redraw is timed apart). Run it with the
reference environment:

    OMP_NUM_THREADS=1 PYTHONPATH=src /tmp/simkgcl-reference-venv/bin/python \\
        bench/recbole_step_cpu_time.py --model SGL --split lastfm-kg
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recbole_bridge import build_recbole  # noqa: E402
from step_cpu_time import cpu_seconds_per_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SGL")
    parser.add_argument("--split", default="lastfm-kg")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the best is kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rb = build_recbole(args.model, args.split)
    model = rb.model
    start = time.process_time()
    model.train()
    train_call = time.process_time() - start
    if hasattr(rb.train_data, "set_mode"):  # knowledge-aware loaders: the recommendation batches
        from recbole.utils import KGDataLoaderState

        rb.train_data.set_mode(KGDataLoaderState.RS)
    batch = next(iter(rb.train_data))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.calculate_loss(batch).backward()

    rounds = cpu_seconds_per_step(step, args.steps, args.rounds)
    print(f"recbole {args.model} {args.split}: CPU s/step best {min(rounds):.4f}, rounds "
          f"{', '.join(f'{r:.4f}' for r in rounds)} ({args.threads} thread(s)); "
          f"model.train() {train_call:.4f} s")


if __name__ == "__main__":
    main()
