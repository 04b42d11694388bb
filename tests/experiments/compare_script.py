"""Child process for the kill test: ``simkgcl compare ARGS...`` with the slow test model known.

Kept out of pytest's collection (no test_ prefix).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))

from engine_fixtures import register_tiny_model  # noqa: E402

from simkgcl.cli import main  # noqa: E402

if __name__ == "__main__":
    register_tiny_model()
    sys.exit(main(["compare", *sys.argv[1:]]))
