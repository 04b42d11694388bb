"""`simkgcl export` on a real file system: every failure is one line and exit 2 (SIGTERM: 143),
leaves no partial file, and leaves the previous file at the target untouched."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import ToyRun, unwritable_folder

from simkgcl.artifact import save_artifact
from simkgcl.cli import main

PREVIOUS = b"user,rank,item,score\nan,1,earlier,0.5\n"


def run_export(*args: str | Path, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simkgcl", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=120, **popen)  # type: ignore


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def export_in_process(capsys, *args: str | Path) -> tuple[int, str]:
    """`simkgcl export` through main() (same code path as the command, without the start-up
    cost of a process); returns the exit code and stderr."""
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def test_out_naming_a_folder(toy_run: ToyRun, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "isdir.csv"
    folder.mkdir()
    code, stderr = export_in_process(capsys, toy_run.run_dir, "--out", folder)
    assert code == 2
    assert_one_line_error(stderr, f"{folder}: is a folder")
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["isdir.csv"]  # no .partial beside it


def test_out_under_a_regular_file(toy_run: ToyRun, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "notafolder"
    blocker.write_bytes(PREVIOUS)
    code, stderr = export_in_process(capsys, toy_run.run_dir, "--out", blocker / "recs.csv")
    assert code == 2
    assert_one_line_error(stderr, "notafolder/recs.csv")
    assert blocker.read_bytes() == PREVIOUS and [p.name for p in tmp_path.iterdir()] == [
        "notafolder"]


def test_out_in_a_read_only_folder(toy_run: ToyRun, tmp_path: Path, capsys) -> None:
    folder = unwritable_folder(tmp_path)
    code, stderr = export_in_process(capsys, toy_run.run_dir, "--out", folder / "recs.csv")
    assert code == 2
    assert_one_line_error(stderr, "recs.csv: cannot write (Permission denied)")


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG like a full disk would.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_file_system_refusing_a_write_midway(toy_run: ToyRun, tmp_path: Path) -> None:
    """A real OS write failure after the first 4 KiB (RLIMIT_FSIZE; ~25 KiB are needed)."""
    target = tmp_path / "recs.csv"
    target.write_bytes(PREVIOUS)
    result = run_export(toy_run.run_dir, "--out", target, "--batch-size", "4",
                        preexec_fn=_limit_file_size)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, f"{target}: cannot write (File too large)")
    assert target.read_bytes() == PREVIOUS
    assert [p.name for p in tmp_path.iterdir()] == ["recs.csv"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_full_disk(toy_run: ToyRun, tmp_path: Path, monkeypatch, capsys, suffix: str) -> None:
    target = tmp_path / f"recs{suffix}"
    target.write_bytes(PREVIOUS)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    code, stderr = export_in_process(capsys, toy_run.run_dir, "--out", target)
    assert code == 2
    assert_one_line_error(stderr, f"{target}: cannot write (No space left on device)")
    assert target.read_bytes() == PREVIOUS
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def _large_run(run_dir: Path, n_users: int = 100_000, n_items: int = 300) -> None:
    """Big enough that a one-user-per-batch export runs for many seconds."""
    rng = np.random.default_rng(0)
    save_artifact(run_dir, model="BPR", dataset="big", config={}, metrics={},
                  user_tokens=[f"u{i}" for i in range(n_users)],
                  item_tokens=[f"i{i}" for i in range(n_items)],
                  user_embeddings=torch.from_numpy(rng.standard_normal((n_users, 4),
                                                                       dtype=np.float32)),
                  item_embeddings=torch.from_numpy(rng.standard_normal((n_items, 4),
                                                                       dtype=np.float32)),
                  train_users=np.arange(n_users) % n_users, train_items=np.arange(n_users) % 7)


def test_sigterm_midway(tmp_path: Path) -> None:
    _large_run(tmp_path / "run")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "recs.csv"
    target.write_bytes(PREVIOUS)
    proc = subprocess.Popen([sys.executable, "-m", "simkgcl", "export", str(tmp_path / "run"),
                             "--out", str(target), "--batch-size", "1", "--k", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".partial") for p in out_dir.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.02)
        time.sleep(0.3)  # well inside the rows now
        assert proc.poll() is None, "the export finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert_one_line_error(stderr, "stopped by SIGTERM", f"{target} left as it was")
    assert target.read_bytes() == PREVIOUS
    assert [p.name for p in out_dir.iterdir()] == ["recs.csv"]
