"""Bulk top-k export to CSV or Parquet, streamed in user batches.

Only one ``batch x n_items`` score block exists at a time, and each batch is appended to the
output as soon as it is ranked (CSV rows, or one Parquet row group), so 70k users x 25k items
runs in bounded memory. The file is streamed through :func:`simkgcl.fileio.atomic_output`: a
temporary file beside the target, renamed over it only once complete. Any failure (an exception,
Ctrl-C, SIGTERM turned into an exception by the CLI, a full disk, a read-only folder, a folder
at the target) removes the temporary file and leaves the previous file at the target untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from simkgcl.errors import ConfigError, InputError, NotFoundError, OutputError
from simkgcl.fileio import atomic_output
from simkgcl.serving.recommend import RecommendationService

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet"}
COLUMNS = ("user", "rank", "item", "score")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the user-facing report."""

    path: Path
    format: str
    n_users: int
    n_rows: int
    k: int
    short_users: int  # users with fewer than k unseen items (fewer rows than k)


def output_format(path: str | Path) -> str:
    """``csv`` or ``parquet`` from the file extension; anything else, or a target that cannot be
    a file (a folder, a missing folder), is refused before any work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{path}: cannot tell the output format from the extension "
                          f"{suffix or '(none)'!r}; use .csv or .parquet")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name a file to write")
    if not path.parent.exists():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    return FORMATS[suffix]


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise ConfigError("writing Parquet needs pyarrow, which is not installed: "
                          "pip install 'simkgcl[parquet]' (or write a .csv file)") from exc
    return pa, pq


def read_user_list(path: str | Path, service: RecommendationService) -> list[int]:
    """Internal ids for a text file of user tokens, one per line (blank lines are skipped).

    An unknown token is an error naming ``file:line``; a repeated token is exported once, and
    how many repeats were dropped is logged.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the user list ({exc})", path) from exc
    ids: list[int] = []
    seen: set[int] = set()
    repeats = blanks = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        token = raw.strip()
        if not token:
            blanks += 1
            continue
        try:
            uid = service.user_id(token)
        except NotFoundError as exc:
            raise InputError(str(exc), path, line_no) from None
        if uid in seen:
            repeats += 1
            continue
        seen.add(uid)
        ids.append(uid)
    if not ids:
        raise InputError("no user tokens found (expected one user token per line)", path)
    if repeats or blanks:
        log.info("%s: %d users; skipped %d repeated tokens and %d blank lines",
                 path, len(ids), repeats, blanks)
    return ids


class _Writer:
    """Appends long-format batches, as CSV or Parquet, to an open binary file."""

    def __init__(self, sink: IO[bytes], fmt: str):
        self._sink = sink
        self._parquet: Any = None
        if fmt == "parquet":
            pa, pq = _import_pyarrow()
            self._pa = pa
            self._schema = pa.schema([("user", pa.string()), ("rank", pa.int32()),
                                      ("item", pa.string()), ("score", pa.float32())])
            self._parquet = pq.ParquetWriter(sink, self._schema)
        else:
            sink.write((",".join(COLUMNS) + "\n").encode())

    def write(self, users: np.ndarray, ranks: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> None:
        if self._parquet is not None:
            table = self._pa.Table.from_arrays(
                [self._pa.array(users, self._pa.string()), self._pa.array(ranks, self._pa.int32()),
                 self._pa.array(items, self._pa.string()),
                 self._pa.array(scores, self._pa.float32())],
                schema=self._schema)
            self._parquet.write_table(table)
        else:
            frame = pd.DataFrame({"user": users, "rank": ranks, "item": items, "score": scores})
            text = frame.to_csv(None, header=False, index=False, float_format="%.7g",
                                lineterminator="\n")
            self._sink.write(text.encode("utf-8"))

    def finish(self) -> None:
        """Write the Parquet footer (CSV needs nothing); the sink stays open."""
        if self._parquet is not None:
            self._parquet.close()

    def abandon(self) -> None:
        """Close quietly after a failure (the file is being discarded), so pyarrow does not
        try again, noisily, when the writer is garbage-collected after the sink is closed."""
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()


def export_recommendations(
    service: RecommendationService,
    out: str | Path,
    *,
    k: int = 20,
    user_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 1024,
    include_seen: bool = False,
    progress: bool | None = None,
) -> ExportSummary:
    """Write top-k for ``user_ids`` (default: every user) to ``out`` (.csv or .parquet).

    Columns: ``user, rank, item, score`` (original tokens, rank 1 = best). ``progress=None``
    shows the bar only on a terminal.
    """
    out = Path(out)
    fmt = output_format(out)
    k = service.check_k(k)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if fmt == "parquet":
        _import_pyarrow()  # fail before any work
    ids = (np.arange(service.n_users, dtype=np.int64) if user_ids is None
           else np.asarray(user_ids, dtype=np.int64))
    user_tokens = np.asarray(service.artifact.user_tokens, dtype=object)
    n_rows = short = 0
    with atomic_output(out) as sink, tqdm(
        total=len(ids), unit="user", desc=f"export {out.name}",
        disable=(None if progress is None else not progress),
    ) as bar:
        writer = _Writer(sink, fmt)
        try:
            for start in range(0, len(ids), batch_size):
                batch = ids[start : start + batch_size]
                top = service.top_k_ids(batch, k, include_seen=include_seen)
                keep = np.arange(k)[None, :] < top.counts[:, None]  # (b, k) real slots
                short += int((top.counts < k).sum())
                rows = np.nonzero(keep)
                writer.write(
                    users=user_tokens[batch][rows[0]],
                    ranks=(rows[1] + 1).astype(np.int32),
                    items=service.item_tokens_of(top.items[keep]),
                    scores=top.scores[keep],
                )
                n_rows += int(keep.sum())
                bar.update(len(batch))
        except BaseException:
            writer.abandon()
            raise
        writer.finish()
    if short:
        log.info("%d users have fewer than %d unseen items and got fewer rows", short, k)
    return ExportSummary(path=out, format=fmt, n_users=len(ids), n_rows=n_rows, k=k,
                         short_users=short)
