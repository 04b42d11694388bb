#!/usr/bin/env bash
# One command: set up the environment and run the test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
V=$("$root/scripts/setup.sh" | tail -n 1)
cd "$root"
"$V/bin/python" -m ruff check src tests bench
"$V/bin/python" -m pytest -q "$@"
