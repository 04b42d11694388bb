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
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
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
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it; another process may
    take it before the server binds it, so :func:`served` retries on a taken port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PortTaken(RuntimeError):
    pass


def _start_and_wait(run_dir: str | Path, port: int, extra_args: Sequence[str], log: IO[str],
                    startup_timeout: float) -> subprocess.Popen[str]:
    """Start `simkgcl serve` and wait for /health; stop it again if it never answers."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "simkgcl", "serve", str(run_dir), "--port", str(port),
         "--log-level", "warning", *extra_args],
        stdout=log, stderr=subprocess.STDOUT, text=True,  # a file, never a pipe that can fill
    )
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                output = log.read()
                if "address already in use" in output.lower():
                    raise _PortTaken(output)
                raise RuntimeError(f"server exited early (code {proc.returncode}):\n{output}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health within {startup_timeout} s")
            time.sleep(0.2)
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def served_process(run_dir: str | Path, *extra_args: str, port: int | None = None,
                   startup_timeout: float = 120.0,
                   attempts: int = 5) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `simkgcl serve RUN_DIR` as a real uvicorn subprocess; yield its base URL and process.

    Waits until /health answers, and stops the server (SIGTERM, then SIGKILL) on exit. When no
    ``port`` is given, a free one is picked, and picked again if another process took it first.
    """
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        for attempt in range(1, attempts + 1):
            chosen = free_port() if port is None else port
            log.seek(0)
            log.truncate()
            try:
                proc = _start_and_wait(run_dir, chosen, extra_args, log, startup_timeout)
                break
            except _PortTaken:
                if port is not None or attempt == attempts:
                    raise
        try:
            yield f"http://127.0.0.1:{chosen}", proc
        finally:
            _stop(proc)


@contextlib.contextmanager
def served(run_dir: str | Path, *extra_args: str, **options: Any) -> Iterator[str]:
    """:func:`served_process`, yielding only the base URL."""
    with served_process(run_dir, *extra_args, **options) as (base, _proc):
        yield base
