"""Bounded HTTP load run: N requests, C concurrent, against a real `simkgcl serve` process.

Request mix (seeded): 70% GET user recommendations, 20% GET similar items, 10% POST batch of 8
users; all with the same k. Prints throughput and p50/p95/p99 latency; exits 1 on any error.

    python bench/load_test.py RUN_DIR                 # starts the server on a free local port
    python bench/load_test.py RUN_DIR --url http://127.0.0.1:8000   # an already running server
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from simkgcl.artifact import load_artifact
from simkgcl.serving.loadtest import request_plan, run_load, served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder whose artifact is served")
    parser.add_argument("--url", help="use this running server instead of starting one")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    art = load_artifact(args.run_dir)
    plan = request_plan(art.user_tokens, art.item_tokens, args.requests, k=args.k, seed=args.seed)
    print(f"artifact: {art.model} / {art.dataset}: {art.n_users} users x {art.n_items} items, "
          f"d={art.embedding_dim}; CPUs: {os.cpu_count()}")
    server = contextlib.nullcontext(args.url) if args.url else served(args.run_dir)
    with server as base:
        warmup = run_load(base, plan[:50], concurrency=args.concurrency)
        result = run_load(base, plan, concurrency=args.concurrency)
    if warmup.errors:
        print(f"warm-up errors: {warmup.error_samples}", file=sys.stderr)
    print(result.summary())
    for sample in result.error_samples:
        print(f"  error: {sample}", file=sys.stderr)
    return 1 if result.errors or warmup.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
