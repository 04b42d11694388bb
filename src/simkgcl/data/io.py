"""Low-level file parsing: fast happy paths, exact ``file:line`` diagnostics on failure.

Every reader first tries a vectorised parse (pandas C engine or a whole-file split) plus
whole-file checks that cost a pass of ``bytes.translate``/``bytes.count`` (about 1 ms per MB).
Only when these fail do we scan the file line by line in Python, to name the first offending
line: bad files are rare and small enough that the slow scan costs nothing on real data.

Field counts are checked in every layout: pandas, given ``n`` column names, silently reads a
first row of ``n + 1`` fields as index + ``n`` columns (shifting every value) and pads short rows
with empty strings, so a row with more or fewer fields than its header (atomic files) or its
layout (three-column KG and rating files) is an error at its line, never a shifted row.
"""

from __future__ import annotations

import codecs
import gzip
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from simkgcl.errors import InputError

_INT_TABLE_CHARS = b"0123456789 \t\r\n"


def read_bytes(path: Path) -> bytes:
    """Whole file content; ``.gz`` files are decompressed transparently."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputError(f"cannot decompress gzip file ({exc})", path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path) from None


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _line_of_offset(data: bytes, offset: int) -> tuple[int, bytes]:
    """(1-based line number, the line's bytes) of byte ``offset``."""
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return data.count(b"\n", 0, offset) + 1, data[start : None if end < 0 else end]


def _check_not_empty(path: Path, data: bytes, expected: str) -> None:
    if not data.strip():
        raise InputError(f"file is empty; expected lines of '{expected}'", path)


def _has_non_int_chars(data: bytes) -> bool:
    return bool(data.translate(None, _INT_TABLE_CHARS))


def _diagnose_int_table(path: Path, data: bytes, n_cols: int, expected: str,
                        label_column: int | None) -> None:
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
        for column, token in enumerate(fields):
            shown = token.decode("utf-8", "replace")
            if column == label_column and token not in (b"0", b"1"):
                raise InputError(
                    f"expected label 0 or 1 in column {column + 1} of '{expected}', "
                    f"found {shown!r}",
                    path,
                    number,
                )
            if not token.isdigit():
                raise InputError(
                    f"expected non-negative integer ids '{expected}', found {shown!r}",
                    path,
                    number,
                )


def read_int_table(path: Path, n_cols: int, expected: str,
                   label_column: int | None = None) -> np.ndarray:
    """Parse a whitespace-separated table of non-negative integers into an (n, n_cols) array.

    ``expected`` names the columns for error messages, e.g. ``"head relation tail"``; the
    values of ``label_column`` (0-based), if given, must be 0 or 1. Only the characters of
    non-negative integers and whitespace are accepted, so "-1" and "1.0" are errors at their
    line (pandas would read "1.0" as 1).
    """
    data = read_bytes(path)
    values = None
    if not _has_non_int_chars(data):
        try:
            frame = pd.read_csv(io.BytesIO(data), sep=r"\s+", header=None, dtype=np.int64,
                                engine="c")
            values = frame.to_numpy(dtype=np.int64)
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, OverflowError):
            values = None
    ok = values is not None and values.ndim == 2 and values.shape[1] == n_cols
    if ok and label_column is not None:
        labels = values[:, label_column]
        ok = bool(((labels == 0) | (labels == 1)).all())
    if ok:
        return values
    _diagnose_int_table(path, data, n_cols, expected, label_column)
    raise InputError(f"could not parse as '{expected}' (no single bad line found)", path)


def read_user_lines(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse the KGAT line-per-user layout ``user item item ...``.

    Returns ``(users, items, n_empty_lines)``: one row per (user, item) pair in file order, and
    the number of user lines that list no item (legal: such a user has nothing in this file).
    """
    expected = "user item item ..."
    data = read_bytes(path)
    _check_not_empty(path, data, expected)
    if _has_non_int_chars(data):
        offset = len(data) - len(data.lstrip(_INT_TABLE_CHARS))  # the first other byte
        number, line = _line_of_offset(data, offset)
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


def _raise_ragged_line(path: Path, data: bytes, n_fields: int, header: str) -> None:
    """Raise at the first data line whose tab-separated field count is not ``n_fields``."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if number == 1 or not line:
            continue
        found = line.count(b"\t") + 1
        if found != n_fields:
            raise InputError(
                f"expected {n_fields} tab-separated fields as in the header ({header}), "
                f"found {found}: {_decode_line(raw)[:80]!r}",
                path,
                number,
            )


def _raise_not_utf8(path: Path, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number, _ = _line_of_offset(data, exc.start)
        raise InputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); RecBole atomic files are UTF-8",
            path,
            number,
        ) from None


def _atomic_rows(path: Path, data: bytes, names: list[str], header: str) -> pd.DataFrame:
    """Every data row as strings, each row checked to have exactly ``len(names)`` fields.

    pandas raises on a row longer than the first one; ``index_col=False`` stops it from reading
    a longer first row as index + columns (it truncates instead), and short rows are padded. So
    the fields are also counted: with no row longer than the header, the file's tab count equals
    ``(n - 1) x rows`` exactly when every row has ``n`` fields.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.BytesIO(data),
                sep="\t",
                header=None,
                skiprows=1,
                names=names,
                index_col=False,
                dtype=str,
                quoting=3,  # csv.QUOTE_NONE: RecBole files carry raw text
                keep_default_na=False,
                na_filter=False,
                engine="c",
                skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        return pd.DataFrame({name: pd.Series(dtype=str) for name in names})
    except UnicodeDecodeError:
        _raise_not_utf8(path, data)
        raise
    except (pd.errors.ParserError, ValueError):
        _raise_ragged_line(path, data, len(names), header)
        raise InputError("could not parse this atomic file", path) from None
    header_tabs = data.count(b"\t", 0, max(data.find(b"\n"), 0))
    if data.count(b"\t") - header_tabs != (len(names) - 1) * len(frame):
        _raise_ragged_line(path, data, len(names), header)
    return frame


def read_atomic(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read the ``required`` (and present ``optional``) columns of a RecBole atomic file.

    Token columns come back as strings, float columns as float64. Columns are found by name, so
    extra columns in any order are fine; every row must have as many fields as the header.
    """
    data = read_bytes(path)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).decode("utf-8", errors="replace")
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
    frame = _atomic_rows(path, data, names, header_text)[wanted].copy()
    if len(frame) == 0:
        raise InputError(f"file has a header but no rows; expected rows of {header_text}", path)
    empty = (frame == "").any(axis=1).to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        column = next(c for c in wanted if frame[c].iat[row] == "")
        raise InputError(
            f"empty value in column {column!r}; expected {header_text}",
            path,
            _data_line_number(data, row),
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
                    _data_line_number(data, row),
                )
            frame[name] = values.astype(np.float64)
    return frame


def _data_line_number(data: bytes, row: int) -> int:
    """File line number of data row ``row`` (0-based) of an atomic file, skipping blank lines."""
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
