"""YAML that a user wrote: config files, search spaces, ``key=value`` overrides.

Values are read with ``yaml.safe_load`` (never evaluated). Every way such input can be unusable
(missing, a folder, unreadable, not UTF-8, not YAML, not a mapping) is one
:class:`~simkgcl.errors.ConfigError` line naming the file and, where PyYAML can tell, the line:
PyYAML's own reports span several lines and a non-UTF-8 file would otherwise end in a
``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simkgcl.errors import ConfigError


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value read as a YAML scalar/collection, never evaluated) -> (key, value)."""
    if "=" not in text:
        raise ConfigError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"expected key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read the value of {key!r} ({raw!r}) as YAML: "
                          f"{_yaml_problem(exc)}") from None
    return key, value


def read_yaml_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML ``what`` (config file, search space file ...) as a dict (empty file -> {}).

    Every way the file can be unusable (missing, unreadable, not UTF-8, not YAML, not a
    mapping) is one ConfigError line naming the file, and the line where it can tell.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}" if not p.exists()
                          else f"{p}: expected a {what}, found a folder or special file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{p}:{line}: the {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x}"
                          "); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = _yaml_line(exc, text)
        where = f"{p}:{line}" if line else str(p)
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value at the top level")
    return {str(k): v for k, v in data.items()}


def _yaml_line(exc: yaml.YAMLError, text: str) -> int | None:
    """1-based line of a YAML error, when PyYAML knows it."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # ReaderError: a character offset
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's explanation on one line, without its multi-line position report."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [exc.context, exc.problem]
        text = ", ".join(str(p) for p in parts if p) or type(exc).__name__
        opened, found = exc.context_mark, exc.problem_mark
        if opened is not None and found is not None and opened.line != found.line:
            text += f" (opened on line {opened.line + 1})"
    elif isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        text = f"unacceptable character {shown} ({exc.reason})"
    else:
        text = str(exc)
    return " ".join(text.split())
