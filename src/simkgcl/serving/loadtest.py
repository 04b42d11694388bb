"""A bounded HTTP load run against a live service: fixed request count, fixed concurrency.

Used by ``bench/load_test.py`` (full run, figures for BENCHMARKS.md) and by the test suite
(small run that must finish with zero errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np


@dataclass
class LoadResult:
    """Outcome of a load run; latencies in milliseconds."""

    requests: int
    concurrency: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray = field(repr=False)
    error_samples: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.concurrency} concurrent: {self.errors} errors, "
                f"{self.seconds:.2f} s, {self.throughput:.0f} req/s, latency p50 "
                f"{self.percentile(50):.1f} ms, p95 {self.percentile(95):.1f} ms, p99 "
                f"{self.percentile(99):.1f} ms")


def request_plan(users: Sequence[str], items: Sequence[str], n_requests: int, *, k: int = 20,
                 seed: int = 0, batch_users: int = 8) -> list[tuple[str, str, dict | None]]:
    """A seeded mix: 70% single-user GET, 20% similar-items GET, 10% batch POST."""
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, str, dict | None]] = []
    for _ in range(n_requests):
        kind = rng.random()
        if kind < 0.7:
            user = users[rng.integers(len(users))]
            plan.append(("GET", f"/v1/users/{quote(user, safe='')}/recommendations?k={k}", None))
        elif kind < 0.9:
            item = items[rng.integers(len(items))]
            plan.append(("GET", f"/v1/items/{quote(item, safe='')}/similar?k={k}", None))
        else:
            chosen = [users[i] for i in rng.integers(len(users), size=batch_users)]
            plan.append(("POST", "/v1/recommendations", {"users": chosen, "k": k}))
    return plan


async def _run(base_url: str, plan: list[tuple[str, str, dict | None]], concurrency: int,
               timeout: float) -> LoadResult:
    import httpx

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)
    latencies = np.zeros(len(plan))
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            method, url, body = plan[i]
            start = time.perf_counter()
            try:
                resp = await client.request(method, url, json=body)
                if resp.status_code != 200:
                    errors.append(f"{method} {url}: HTTP {resp.status_code} {resp.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{method} {url}: {type(exc).__name__} {exc}")
            latencies[i] = (time.perf_counter() - start) * 1000.0

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return LoadResult(requests=len(plan), concurrency=concurrency, errors=len(errors),
                      seconds=seconds, latencies_ms=latencies, error_samples=errors[:5])


def run_load(base_url: str, plan: list[tuple[str, str, dict | None]], *, concurrency: int = 16,
             timeout: float = 30.0) -> LoadResult:
    """Send every request in ``plan`` with ``concurrency`` in flight; count non-200 as errors."""
    return asyncio.run(_run(base_url, plan, concurrency, timeout))


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(run_dir: str | Path, *extra_args: str, port: int | None = None,
           startup_timeout: float = 120.0) -> Iterator[str]:
    """Run `simkgcl serve RUN_DIR` as a real uvicorn subprocess; yield its base URL.

    Waits until /health answers, and stops the server (SIGTERM, then SIGKILL) on exit.
    """
    import httpx

    port = free_port() if port is None else port
    proc = subprocess.Popen(
        [sys.executable, "-m", "simkgcl", "serve", str(run_dir), "--port", str(port),
         "--log-level", "warning", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"server exited early (code {proc.returncode}):\n{output}")
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health within {startup_timeout} s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
