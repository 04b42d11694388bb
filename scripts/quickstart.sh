#!/usr/bin/env bash
# One command: set up the environment and run the main job (train the default model on the
# bundled dataset and print its test metrics). Extra arguments go to `simkgcl train`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
V=$("$root/scripts/setup.sh" | tail -n 1)
cd "$root"
"$V/bin/simkgcl" train "$@"
