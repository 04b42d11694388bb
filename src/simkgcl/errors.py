"""Errors that the CLI turns into one line and exit code 2 (no traceback unless --debug)."""

from __future__ import annotations

from pathlib import Path

QUOTED_CHARS = 40  # a user-supplied value quoted in an error message is cut to this length


def quoted(value: object, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message must stay one short line
    even when the value that caused it is a 50 MB string or a million-element list."""
    text = repr(value)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


class SimKGCLError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class InputError(SimKGCLError):
    """A data file (or a folder) is not what was expected.

    The message reads ``FILE:LINE: what was expected`` so a user can jump straight to it.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.detail = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class ConfigError(SimKGCLError):
    """A configuration key or value is not valid."""


class ArtifactError(SimKGCLError):
    """A run folder or model artifact cannot be used."""


class NotFoundError(SimKGCLError):
    """A user or item token that the model does not know."""


class OutputError(SimKGCLError, OSError):
    """A file cannot be written (read-only folder, full disk, a folder in the way).

    Also an ``OSError``, so code that already catches ``OSError`` keeps working.
    """
