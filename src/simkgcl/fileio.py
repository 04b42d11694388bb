"""Writing files so that a failure never leaves half a file, and reading torch files safely.

Every file simkgcl writes (checkpoints, run records, artifacts, exports) goes through
:func:`atomic_output` (or :func:`atomic_write_bytes`, built on it):

1. the data go to a new temporary file in the target's own folder (so the final rename never
   crosses a file system), named ``.<target>.<random>.partial`` and created exclusively
   (``O_EXCL``), so two writers of the same target never share a temporary file;
2. the file is flushed and ``fsync``-ed, then ``os.replace``-d over the target (readers see the
   old file or the new one, never a mixture), and the folder is ``fsync``-ed so the rename
   itself survives a power cut;
3. on any failure — an exception in the caller's writing code, ``KeyboardInterrupt``, an error
   from the operating system (read-only folder, full disk, a target that is a folder) — the
   temporary file is removed and the previous file at the target is left untouched. OS errors
   become one :class:`~simkgcl.errors.OutputError` line naming the target. Only SIGKILL (or a
   power cut) can leave a ``.partial`` file behind; SIGTERM must be turned into an exception by
   the command that installs a handler for it.

:func:`safe_torch_load` reads a ``torch.save`` file with ``weights_only=True`` — plain tensors,
numbers, strings, lists and dicts; pickled Python objects are refused, never executed — and
turns every failure into one line naming the file (torch's own message spans several lines and
suggests ``weights_only=False``, which is exactly what must not be done with a foreign file).

This module imports nothing from simkgcl but its errors, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from simkgcl.errors import ArtifactError, OutputError

__all__ = ["atomic_output", "atomic_write_bytes", "safe_torch_load"]

_PARTIAL_SUFFIX = ".partial"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _write_error(target: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"{target}: cannot write ({reason})")


def _open_temporary(target: Path) -> tuple[int, Path]:
    """A new, exclusively created file beside ``target`` (mode 0666 minus the umask)."""
    folder = target.parent
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; name a file to write")
    for _ in range(100):
        tmp = folder / f".{target.name}.{secrets.token_hex(4)}{_PARTIAL_SUFFIX}"
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _write_error(target, exc) from exc
    raise _write_error(target, OSError(errno.EEXIST, "no free temporary file name"))


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; best effort (some file systems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace ``path`` only if the ``with`` block succeeds.

    Streaming writers (CSV, Parquet) write batch after batch into the yielded file; nothing
    appears at ``path`` until the end, and a failure leaves the old file there.
    """
    target = Path(path)
    fd, tmp = _open_temporary(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh  # type: ignore[misc]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OutputError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never half."""
    with atomic_output(path) as fh:
        fh.write(data)


_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _load_failure(path: Path, exc: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused ``path``."""
    if isinstance(exc, OSError):
        return f"{path}: cannot be read ({exc.strerror or exc})"
    text = str(exc)
    found = _GLOBAL_RE.search(text)
    if found:
        return (f"{path}: cannot be loaded safely: it holds a pickled Python object "
                f"({found.group(1)[:80]}); such files are refused, never unpickled, because "
                "unpickling can run code")
    if "Weights only load failed" in text:
        return (f"{path}: cannot be loaded safely: it is not a plain-tensor file written by "
                "torch.save (pickled data are refused, never unpickled)")
    return f"{path}: cannot be loaded safely: not a complete torch.save file (truncated or corrupt)"


def safe_torch_load(path: str | Path, *, map_location: torch.device | str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with failures as one-line ``ArtifactError``s."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: not found" if not p.exists() else f"{p}: not a file")
    try:
        with warnings.catch_warnings():  # torch warns (multi-line) about foreign pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- every failure becomes the same one-line error
        raise ArtifactError(_load_failure(p, exc)) from exc
