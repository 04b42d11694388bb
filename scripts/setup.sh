#!/usr/bin/env bash
# Creates .venv (if needed) with the CPU build of torch and simkgcl with all extras.
# Usage: scripts/setup.sh            (VENV=path to use another location)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
V=${VENV:-$root/.venv}
if [ ! -x "$V/bin/python" ]; then
  python3 -m venv "$V"
fi
# Pin torch here (install scripts and CI only): a loose requirement would pull a CUDA build.
"$V/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$V/bin/python" -m pip install -q --disable-pip-version-check -e "$root[all]"
echo "$V"
