"""Bounded HTTP load run: N requests, C concurrent, against a real `simkgcl serve` process.

Request mix (seeded): 70% GET user recommendations, 20% GET similar items, 10% POST batch of 8
users; all with the same k. Prints throughput and p50/p95/p99 latency; exits 1 on any error.

    python bench/load_test.py RUN_DIR                 # starts the server on a free local port
    python bench/load_test.py RUN_DIR --url http://127.0.0.1:8000   # an already running server

``--big USERS:K`` instead sends one ``POST /v1/recommendations`` for the first USERS users with
that k (``K`` may be ``all`` = every item) while polling ``/health`` every 50 ms, and prints the
big request's status, seconds and reply size, the /health latencies meanwhile, and the server's
peak resident memory (``--server-pid`` for a server started elsewhere):

    python bench/load_test.py RUN_DIR --big 1000:all            # the issue-10 request
    python bench/load_test.py RUN_DIR --big 1000:100            # at the default limit

``--explain`` asks for the KG explanation of every recommended item (``explain=true`` on the
recommendation requests; issue 15):

    python bench/load_test.py RUN_DIR --explain

Extra ``simkgcl serve`` options go after ``--``: ``... --big 1000:100 -- --max-results 200000``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from simkgcl.artifact import load_artifact
from simkgcl.serving.loadtest import request_plan, run_load, served_process

HEALTH_EVERY_S = 0.05


def peak_rss_mb(pid: int) -> float:
    """VmHWM of another process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _send_big(base: str, users: list[str], k: int, results: multiprocessing.Queue) -> None:
    import httpx

    began = time.perf_counter()
    resp = httpx.post(f"{base}/v1/recommendations", json={"users": users, "k": k}, timeout=600)
    results.put({"status": resp.status_code, "seconds": time.perf_counter() - began,
                 "reply_bytes": len(resp.content),
                 "detail": resp.json().get("detail", "") if resp.status_code != 200 else ""})


def big_request_with_health(base: str, users: list[str], k: int) -> dict:
    """The big request goes from another process, so that receiving its reply does not delay
    the /health probes of this one: the latencies are the server's alone."""
    import httpx

    results: multiprocessing.Queue = multiprocessing.Queue()
    sender = multiprocessing.Process(target=_send_big, args=(base, users, k, results))
    health_ms: list[float] = []
    with httpx.Client(base_url=base, timeout=600) as client:
        sender.start()
        while sender.is_alive() and results.empty():
            start = time.perf_counter()
            client.get("/health")
            health_ms.append((time.perf_counter() - start) * 1000)
            time.sleep(HEALTH_EVERY_S)
    out = results.get(timeout=600)
    sender.join()
    return {**out, "health_ms": np.asarray(health_ms)}


def with_explain(step: tuple[str, str, dict | None]) -> tuple[str, str, dict | None]:
    """The same request asking for explanations (recommendation endpoints only)."""
    method, url, body = step
    if method == "POST":
        return method, url, {**(body or {}), "explain": True}
    return (method, url + "&explain=true", body) if "/recommendations" in url else step


def run_big(base: str, art, spec: str, pid: int | None) -> int:
    n_users, k_text = spec.split(":")
    k = art.n_items if k_text == "all" else int(k_text)
    users = art.user_tokens[: int(n_users)]
    out = big_request_with_health(base, users, k)
    health = out["health_ms"]
    print(f"POST {len(users)} users x k={k}: HTTP {out['status']} in {out['seconds']:.2f} s, "
          f"reply {out['reply_bytes'] / 1e6:.2f} MB {out['detail']}")
    if health.size:
        print(f"/health meanwhile: {health.size} probes, p50 {np.percentile(health, 50):.1f} ms, "
              f"max {health.max():.1f} ms")
    if pid is not None:
        print(f"server peak RSS: {peak_rss_mb(pid):.0f} MiB")
    return 0


def main() -> int:
    argv = sys.argv[1:]
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder whose artifact is served")
    parser.add_argument("--url", help="use this running server instead of starting one")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server (peak RSS)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big", metavar="USERS:K", help="one big batch request (see above)")
    parser.add_argument("--explain", action="store_true",
                        help="explanations on every recommendation request")
    args = parser.parse_args(argv)

    art = load_artifact(args.run_dir)
    print(f"artifact: {art.model} / {art.dataset}: {art.n_users} users x {art.n_items} items, "
          f"d={art.embedding_dim}; CPUs: {os.cpu_count()}")
    server = (contextlib.nullcontext((args.url, None)) if args.url
              else served_process(args.run_dir, *serve_args))
    with server as (base, proc):
        pid = args.server_pid if proc is None else proc.pid
        if args.big:
            return run_big(base, art, args.big, pid)
        plan = request_plan(art.user_tokens, art.item_tokens, args.requests, k=args.k,
                            seed=args.seed)
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
