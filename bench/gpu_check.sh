#!/usr/bin/env bash
# GPU check for simkgcl on a fresh CUDA machine (one H200-class GPU), in at most ~8 minutes:
#   1. set up: a venv (build/gpu-venv, sees the system's packages) with torch (installed only if
#      missing), the runtime deps that are missing, and this package (pip --no-deps -e .);
#   2. the CUDA-marked tests (pytest -m cuda);
#   3. the amazon-book-scale benchmark: SimKGCL on amazon-book + a SYNTHETIC KG (686,516 triples,
#      bench/make_synthetic_kg.py), valid_on_test=true as the seed (all 652,514 training
#      interactions, ~319 batches of 2048), fp32 and bf16 autocast;
#   4. if time is left: test accuracy fp32 vs bf16 autocast on the bundled lastfm-kg (to early stop).
# Prints every figure (markdown tables); JSON results go to $OUT (if set) or bench/results/.
#
#   bash bench/gpu_check.sh
#
# amazon-book (train.txt, test.txt; not in the repository) is looked up in $AMAZON_BOOK, then
# ../shared/datasets/amazon-book, shared/datasets/amazon-book, out/amazon-book. To bring it to a
# remote machine: cp -r ../shared/datasets/amazon-book out/amazon-book and carry out/amazon-book.
#
# Knobs (environment): PYTHON (python3), GPU_CHECK_DEVICE (cuda; cpu = dry run of the CPU parts),
# GPU_CHECK_QUICK=1 (tiny settings, bundled data only: for a dry run), GPU_CHECK_VENV=none (use
# $PYTHON as it is), BENCH_THREADS (8), DEADLINE_S (470).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
THREADS=${BENCH_THREADS:-8}
DEADLINE_S=${DEADLINE_S:-470}
RESULTS=${OUT:-$REPO/bench/results}
# bf16 autocast needs CUDA (CPU has no bf16 sparse CSR matmul): a CPU dry run does fp32 only
if [ "$DEVICE" = cpu ]; then MODES=(none); else MODES=(none bf16); fi
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/gpu-check-summary.md"
: > "$SUMMARY"
STATUS=0

say() { printf '\n=== [%4ds] %s\n' "$SECONDS" "$*"; }
left() { echo $((DEADLINE_S - SECONDS)); }
fail() { echo "FAILED: $*"; STATUS=1; }

# ---------------------------------------------------------------- 1. set up
say "machine"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
nproc
PY=${PYTHON:-python3}
"$PY" --version || { echo "no python ($PY)"; exit 1; }

# A python that already has torch (as on the lent H200 image, itself a venv) is used as it is:
# a venv made from it would not see its packages.
VENV_MODE=${GPU_CHECK_VENV:-auto}
if [ "$VENV_MODE" = auto ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then VENV_MODE=none; else VENV_MODE=venv; fi
fi
if [ "$VENV_MODE" != none ]; then
  say "venv build/gpu-venv (with system site-packages)"
  if [ ! -x build/gpu-venv/bin/python ]; then
    "$PY" -m venv --system-site-packages build/gpu-venv || { echo "cannot create a venv"; exit 1; }
  fi
  PY=$REPO/build/gpu-venv/bin/python
fi

has() { "$PY" -c "import $1" >/dev/null 2>&1; }
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

if has torch; then
  echo "torch present: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
else
  say "installing torch (PyPI wheel with CUDA)"
  pip_install torch || { echo "cannot install torch (no index reachable?)"; exit 1; }
fi
missing=()
for mod in numpy pandas yaml tqdm pytest; do
  has "$mod" || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing missing: ${missing[*]}"
  pkgs=()
  for m in "${missing[@]}"; do [ "$m" = yaml ] && pkgs+=(pyyaml) || pkgs+=("$m"); done
  pip_install "${pkgs[@]}" || fail "pip install ${pkgs[*]}"
fi

where=$("$PY" -c 'import simkgcl, os; print(os.path.realpath(simkgcl.__file__))' 2>/dev/null || true)
if [[ "$where" == "$REPO/src/"* ]]; then
  echo "simkgcl already installed from this checkout"
else
  say "pip install --no-deps -e ."
  if ! pip_install --no-deps --no-build-isolation -e . && ! pip_install --no-deps -e .; then
    echo "pip install failed: falling back to PYTHONPATH=src"
    export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
"$PY" - "$DEVICE" <<'EOF' || { echo "torch/CUDA not usable"; exit 1; }
import sys, torch, simkgcl
print("simkgcl", simkgcl.__version__ if hasattr(simkgcl, "__version__") else "", "from",
      simkgcl.__file__)
print("torch", torch.__version__, "| built for CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if sys.argv[1].startswith("cuda"):
    assert torch.cuda.is_available(), "CUDA requested but torch.cuda.is_available() is False"
    print("device", torch.cuda.get_device_name(0), "| bf16 supported",
          torch.cuda.is_bf16_supported())
EOF

# ---------------------------------------------------------------- 2. CUDA-marked tests
say "pytest -m cuda"
if [ "$DEVICE" = cpu ]; then
  echo "(dry run on CPU: collecting only)"
  timeout 120 "$PY" -m pytest -q -m cuda --collect-only -p no:cacheprovider tests
  rc=$?
else
  timeout 180 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
  rc=$?
fi
case $rc in
  0) echo "CUDA tests: passed" ;;
  5) echo "CUDA tests: none are marked 'cuda' (nothing collected)" ;;
  *) fail "pytest -m cuda exit $rc" ;;
esac
echo "- pytest -m cuda: exit $rc (5 = no CUDA-marked tests)" >> "$SUMMARY"

# ---------------------------------------------------------------- 3. amazon-book scale
bench() {  # bench NAME TIMEOUT ARGS... : one bench/run.py call, its markdown into the summary
  local name=$1 limit=$2; shift 2
  if [ "$(left)" -lt 30 ]; then echo "skipped $name: out of time"; return 1; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  say "bench $name (timeout ${limit}s)"
  timeout "$limit" "$PY" bench/run.py --device "$DEVICE" --threads "$THREADS" --name "gpu-$name" \
    --out "$RESULTS/gpu-$name.json" --markdown "$SUMMARY" --timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] && tail -n 8 "$SUMMARY"
  return $rc
}

AMAZON=""
for cand in "${AMAZON_BOOK:-}" ../shared/datasets/amazon-book shared/datasets/amazon-book \
            out/amazon-book; do
  if [ -n "$cand" ] && [ -f "$cand/train.txt" ] && [ -f "$cand/test.txt" ]; then
    AMAZON=$cand; break
  fi
done

if [ "$QUICK" = 1 ]; then
  SCALE_DATA=lastfm-kg
  SCALE_ARGS=(--epochs 1 --max-batches 2)
elif [ -n "$AMAZON" ]; then
  say "synthetic KG for amazon-book ($AMAZON)"
  SYN=out/amazon-book-synkg
  if [ ! -s "$SYN/kg_final.txt" ] || [ ! -e "$SYN/train.txt" ]; then
    timeout 180 "$PY" bench/make_synthetic_kg.py --data "$AMAZON" --out "$SYN" \
      || fail "make_synthetic_kg.py"
  fi
  cat "$SYN/SYNTHETIC_KG.txt" 2>/dev/null
  SCALE_DATA=$SYN
  SCALE_ARGS=(--epochs 3 valid_on_test=true)
else
  fail "amazon-book not found (set AMAZON_BOOK or carry out/amazon-book): scale benchmark skipped"
  SCALE_DATA=""
fi

if [ -n "$SCALE_DATA" ]; then
  label=$(basename "$SCALE_DATA")
  for mode in "${MODES[@]}"; do
    if ! bench "simkgcl-$label-$mode" 150 --model simkgcl --dataset "$SCALE_DATA" \
         --autocast "$mode" "${SCALE_ARGS[@]}"; then
      # too slow for whole epochs: measure 40 batches and extrapolate (labelled as such)
      bench "simkgcl-$label-$mode-40batches" 120 --model simkgcl --dataset "$SCALE_DATA" \
        --autocast "$mode" --epochs 1 --max-batches 40 valid_on_test=true \
        || fail "scale benchmark $mode"
    fi
  done
fi

# ---------------------------------------------------------------- 4. bf16 effect on accuracy
if [ "$QUICK" = 1 ]; then ACC_ARGS=(--epochs 2); else ACC_ARGS=(); fi
for mode in "${MODES[@]}"; do
  if [ "$(left)" -lt 100 ]; then echo "skipped accuracy $mode: out of time"; continue; fi
  bench "accuracy-simkgcl-lastfm-kg-$mode" 150 --accuracy --model simkgcl --dataset lastfm-kg \
    --autocast "$mode" "${ACC_ARGS[@]}" || fail "accuracy $mode"
done

say "summary ($SUMMARY)"
cat "$SUMMARY"
echo "mixed precision: the engine key is mixed_precision: bf16; bench/run.py --autocast bf16 wraps"
echo "training and evaluation in torch.autocast (the model keeps its sparse/softmax parts fp32)."
say "done in ${SECONDS}s, status $STATUS"
exit $STATUS
