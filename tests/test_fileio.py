"""fileio: the one atomic writer (old file kept on every failure, no temp file left) and the
safe torch loader (one line, never torch's advice to unpickle)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from simkgcl.errors import ArtifactError, OutputError, SimKGCLError
from simkgcl.fileio import atomic_output, atomic_write_bytes, safe_torch_load
from simkgcl.training.checkpoint import load_checkpoint


def test_writes_replace_the_file_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with atomic_output(target) as fh:
        fh.write(b"new, ")
        fh.write(b"in two parts")
    assert target.read_bytes() == b"new, in two parts"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as fh:
        fh.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"previous")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # the point where a full disk reports itself
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(target, b"new")
    assert str(info.value) == f"{target}: cannot write (No space left on device)"
    assert isinstance(info.value, OSError) and isinstance(info.value, SimKGCLError)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_folder_at_the_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.mkdir()
    with pytest.raises(OutputError, match=r"out\.csv: is a folder; name a file to write"):
        atomic_write_bytes(target, b"x")
    assert target.is_dir() and list(target.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_file_in_the_path_is_a_one_line_error(tmp_path: Path) -> None:
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=r"plain/out\.csv: cannot write \(Not a directory\)"):
        atomic_write_bytes(a_file / "out.csv", b"x")


def test_two_writers_of_one_target_never_share_a_temporary_file(tmp_path: Path) -> None:
    """The old checkpoint writer named its temp file by pid: two threads clobbered each other."""
    target = tmp_path / "shared.json"
    with atomic_output(target) as first:
        first.write(b"first")
        with atomic_output(target) as second:
            second.write(b"second")
        assert target.read_bytes() == b"second"
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def _assert_one_line(message: str) -> None:
    assert "\n" not in message and "weights_only" not in message and len(message) < 300


def test_pickled_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    """(That nothing runs is shown with a file-creating object in test_serving_artifact.py.)"""
    path = tmp_path / "best.pt"
    torch.save({"format": 1, "model": print}, path)
    for load in (safe_torch_load, load_checkpoint):
        with pytest.raises(ArtifactError) as info:
            load(path)
        _assert_one_line(str(info.value))
        assert str(info.value).startswith(f"{path}: cannot be loaded safely: it holds a pickled "
                                          "Python object (print)")


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_corrupt_or_foreign_files_are_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="cannot be loaded safely") as info:
        load_checkpoint(path)
    _assert_one_line(str(info.value))


def test_plain_tensors_load(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"w": torch.arange(3), "meta": {"epoch": 2, "name": "x"}}, path)
    data = safe_torch_load(path)
    assert torch.equal(data["w"], torch.arange(3)) and data["meta"] == {"epoch": 2, "name": "x"}
    with pytest.raises(ArtifactError, match="not found"):
        safe_torch_load(tmp_path / "missing.pt")
