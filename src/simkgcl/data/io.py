"""Low-level file parsing: fast happy paths, exact ``file:line`` diagnostics on failure.

Every reader first tries a vectorised parse (pandas C engine or a whole-file split). Only when
that fails do we scan the file line by line in Python, to name the first offending line: bad
files are rare and small enough that the slow scan costs nothing on real data.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd

from simkgcl.errors import InputError

_NOT_INT_CHARS = re.compile(rb"[^0-9 \t\r\n]")


def read_bytes(path: Path) -> bytes:
    """Whole file content; ``.gz`` files are decompressed transparently."""
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot decompress gzip file ({exc})", path) from None
    return path.read_bytes()


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _is_non_negative_int(token: bytes) -> bool:
    return token.isdigit()


def _check_not_empty(path: Path, data: bytes, expected: str) -> None:
    if not data.strip():
        raise InputError(f"file is empty; expected lines of '{expected}'", path)


def _diagnose_int_table(path: Path, data: bytes, n_cols: int, expected: str) -> None:
    """Raise an InputError at the first line that is not ``n_cols`` non-negative integers."""
    _check_not_empty(path, data, expected)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != n_cols:
            raise InputError(
                f"expected {n_cols} whitespace-separated columns '{expected}', "
                f"found {len(fields)}: {_decode_line(raw)[:80]!r}",
                path,
                number,
            )
        for token in fields:
            if not _is_non_negative_int(token):
                raise InputError(
                    f"expected non-negative integer ids '{expected}', "
                    f"found {token.decode('utf-8', 'replace')!r}",
                    path,
                    number,
                )


def read_int_table(path: Path, n_cols: int, expected: str) -> np.ndarray:
    """Parse a whitespace-separated table of non-negative integers into an (n, n_cols) array.

    ``expected`` names the columns for error messages, e.g. ``"head relation tail"``.
    """
    try:
        frame = pd.read_csv(
            path,
            sep=r"\s+",
            header=None,
            dtype=np.int64,
            engine="c",
            compression="infer",
        )
        values = frame.to_numpy(dtype=np.int64)
        ok = values.ndim == 2 and values.shape[1] == n_cols and not (values < 0).any()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, OverflowError):
        ok = False
    if ok:
        return values
    data = read_bytes(path)
    _diagnose_int_table(path, data, n_cols, expected)
    raise InputError(f"could not parse as '{expected}' (no single bad line found)", path)


def read_user_lines(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse the KGAT line-per-user layout ``user item item ...``.

    Returns ``(users, items, n_empty_lines)``: one row per (user, item) pair in file order, and
    the number of user lines that list no item (legal: such a user has nothing in this file).
    """
    expected = "user item item ..."
    data = read_bytes(path)
    _check_not_empty(path, data, expected)
    bad = _NOT_INT_CHARS.search(data)
    if bad is not None:
        number = data.count(b"\n", 0, bad.start()) + 1
        line_start = data.rfind(b"\n", 0, bad.start()) + 1
        line_end = data.find(b"\n", bad.start())
        line = data[line_start : None if line_end < 0 else line_end]
        token = next((t for t in line.split() if not t.isdigit()), line[:20])
        raise InputError(
            f"expected non-negative integer ids '{expected}', "
            f"found {token.decode('utf-8', 'replace')!r}",
            path,
            number,
        )
    user_tokens: list[bytes] = []
    counts: list[int] = []
    item_tokens: list[bytes] = []
    for raw in data.split(b"\n"):
        fields = raw.split()
        if fields:
            user_tokens.append(fields[0])
            counts.append(len(fields) - 1)
            item_tokens.extend(fields[1:])
    line_users = np.array(user_tokens).astype(np.int64) if user_tokens else np.zeros(0, np.int64)
    items = np.array(item_tokens).astype(np.int64) if item_tokens else np.zeros(0, np.int64)
    per_line = np.asarray(counts, dtype=np.int64)
    users = np.repeat(line_users, per_line)
    return users, items, int((per_line == 0).sum())


# ---------------------------------------------------------------------------------------------
# RecBole atomic files

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_atomic_header(path: Path, first_line: str) -> list[tuple[str, str]]:
    """``name:type`` fields of a RecBole atomic header, validated."""
    fields = []
    for column, spec in enumerate(first_line.rstrip("\r\n").split("\t"), start=1):
        name, sep, kind = spec.partition(":")
        if not sep or not name or kind not in ATOMIC_TYPES:
            raise InputError(
                f"header column {column} is {spec!r}; expected 'name:type' with type one of "
                f"{', '.join(ATOMIC_TYPES)} (tab separated, e.g. 'user_id:token')",
                path,
                1,
            )
        fields.append((name, kind))
    return fields


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
            return handle.readline()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file ({exc})", path) from None


def _diagnose_atomic(path: Path, n_cols: int, header: str) -> None:
    data = read_bytes(path)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 or not raw.strip(b"\r"):
            continue
        found = raw.rstrip(b"\r").count(b"\t") + 1
        if found != n_cols:
            raise InputError(
                f"expected {n_cols} tab-separated columns as in the header ({header}), "
                f"found {found}: {_decode_line(raw)[:80]!r}",
                path,
                number,
            )


def read_atomic(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read the ``required`` (and present ``optional``) columns of a RecBole atomic file.

    Token columns come back as strings, float columns as float64. Columns are found by name, so
    extra columns in any order are fine.
    """
    first = _first_line(path)
    if not first.strip():
        raise InputError(
            f"file is empty; expected a 'name:type' header with {', '.join(required)}", path, 1
        )
    fields = parse_atomic_header(path, first)
    names = [name for name, _ in fields]
    header_text = " ".join(f"{n}:{k}" for n, k in fields)
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(
            f"header lacks column(s) {', '.join(missing)}; expected {', '.join(required)} "
            f"(found {', '.join(names)})",
            path,
            1,
        )
    wanted = [name for name in names if name in required or name in optional]
    kinds = dict(fields)
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            header=None,
            skiprows=1,
            names=names,
            dtype=str,
            quoting=3,  # csv.QUOTE_NONE: RecBole files carry raw text
            keep_default_na=False,
            na_filter=False,
            engine="c",
            compression="infer",
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame({name: pd.Series(dtype=str) for name in wanted})
    except (pd.errors.ParserError, ValueError):
        _diagnose_atomic(path, len(names), header_text)
        raise InputError("could not parse this atomic file", path) from None
    frame = frame[wanted].copy()
    if len(frame) == 0:
        raise InputError(f"file has a header but no rows; expected rows of {header_text}", path)
    # Short rows show up as empty strings in the trailing columns.
    if len(names) > 1:
        short = (frame[wanted] == "").any(axis=1).to_numpy()
        if short.any():
            _diagnose_atomic(path, len(names), header_text)
            row = int(np.flatnonzero(short)[0])
            column = next(c for c in wanted if frame[c].iat[row] == "")
            raise InputError(
                f"empty value in column {column!r}; expected {header_text}",
                path,
                _data_line_number(path, row),
            )
    for name in wanted:
        if kinds[name] == "float":
            values = pd.to_numeric(frame[name], errors="coerce")
            bad = values.isna().to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"column {name!r} is declared float but holds {frame[name].iat[row]!r}",
                    path,
                    _data_line_number(path, row),
                )
            frame[name] = values.astype(np.float64)
    return frame


def _data_line_number(path: Path, row: int) -> int:
    """File line number of data row ``row`` (0-based) of an atomic file, skipping blank lines."""
    data = read_bytes(path)
    seen = -1
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 or not raw.strip(b"\r"):
            continue
        seen += 1
        if seen == row:
            return number
    return row + 2


def natural_order(tokens: np.ndarray) -> np.ndarray:
    """Permutation sorting string tokens naturally ("2" < "10", "e9" < "e10"), deterministically.

    Ids are assigned in this order, so integer tokens keep their numeric order and a dataset
    written to atomic files and read back gets the very same ids.
    """
    series = pd.Series(tokens, dtype=object).astype(str)
    parts = series.str.extract(r"^(.*?)(\d*)$")
    digits = parts[1].str.lstrip("0")
    keys = pd.DataFrame(
        {"prefix": parts[0], "ndigits": digits.str.len(), "digits": digits, "token": series}
    )
    return keys.sort_values(
        ["prefix", "ndigits", "digits", "token"], kind="stable"
    ).index.to_numpy()
