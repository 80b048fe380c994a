#!/usr/bin/env bash
# One-command GPU check of gcln_fast on a fresh machine with one NVIDIA GPU,
# Python 3.11 and a CUDA toolkit (nvcc) matching torch's CUDA major version:
#
#   bash bench/gpu_check.sh            # from the repository root
#
#   [1/4] install   venv ($VENV, default .venv) + torch 2.14.1, torchvision, build tools
#                   (skipped when the venv already has torch 2.14.1: offline machines)
#   [2/4] build     pip install -e ".[test]" with TORCH_CUDA_ARCH_LIST = this GPU's capability
#   [3/4] test      the CUDA kernel tests first (tests/test_qnt_cuda.py, -x), then the rest
#                   of the suite; CUDA and compiled-Triton tests are active (no TRITON_INTERPRET)
#   [4/4] bench     bench/bench_qnt.py --device cuda -> results/gpu_bench.{json,md}, then
#                   bench/bench_triton_variants.py (the Triton kernel forms side by side)
#
# Time: the whole run is bounded by T_TOTAL (default 470 s, under 8 minutes).
# Every phase has its own limit (T_INSTALL, T_BUILD, T_TEST_CUDA, T_TEST_REST,
# T_BENCH, in seconds) and never eats into the time kept for the phases after
# it (the CUDA tests keep time for the bench); a phase that fails or runs out of
# time is reported and the later phases still run. Exit status 0 only if every
# phase passed. Other knobs: PYTHON (default python3.11), VENV, TORCH_INDEX_URL
# (an extra wheel index, e.g. https://download.pytorch.org/whl/cu130),
# PYTEST_MARKERS (a -m expression for both test phases, e.g. "not slow"),
# PYTEST_ARGS and BENCH_ARGS (extra space-separated arguments).
set -euo pipefail

cd "$(dirname "$0")/.."
START=$SECONDS
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
T_TOTAL=${T_TOTAL:-470}
T_INSTALL=${T_INSTALL:-240}
T_BUILD=${T_BUILD:-180}
T_TEST_CUDA=${T_TEST_CUDA:-150}
T_TEST_REST=${T_TEST_REST:-150}
T_BENCH=${T_BENCH:-180}
read -r -a EXTRA_PYTEST <<< "${PYTEST_ARGS:-}"
read -r -a EXTRA_BENCH <<< "${BENCH_ARGS:-}"
MARKERS=()
[ -n "${PYTEST_MARKERS:-}" ] && MARKERS=(-m "$PYTEST_MARKERS")
FAILED=()

phase() { printf '\n[%s] %s (+%ds) %s\n' "$1" "$(date -u +%H:%M:%SZ)" "$((SECONDS - START))" "$2"; }
# run NAME LIMIT RESERVE CMD...: runs CMD under `timeout` for at most LIMIT
# seconds and never past T_TOTAL - RESERVE (time kept for the later phases);
# records a failure instead of exiting.
run() {
  local name=$1 limit=$2 reserve=$3 rc=0
  shift 3
  local left=$((T_TOTAL - (SECONDS - START) - reserve))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "!! $name: skipped, no time left"
    FAILED+=("$name")
    return 0
  fi
  timeout --kill-after=5 "$limit" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "!! $name: timed out after ${limit}s"; else echo "!! $name: exit status $rc"; fi
    FAILED+=("$name")
  fi
  return 0
}

phase 1/4 "install: $VENV with $("$PYTHON" --version 2>&1)"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || true
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.__version__.split("+")[0] == "2.14.1" else 1)' 2>/dev/null; then
  echo "torch 2.14.1 already installed in $VENV: skipping the download"
else
  run install "$T_INSTALL" 270 "$PY" -m pip install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    torch==2.14.1 torchvision==0.29.1 ninja setuptools wheel numpy
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "| GPU:", torch.cuda.is_available() and torch.cuda.get_device_name(0))' ||
  FAILED+=(torch)

phase 2/4 "build: the extension with its CUDA kernels"
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ' || true)
[ -n "$CAP" ] || CAP=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' || echo "9.0")
export TORCH_CUDA_ARCH_LIST=$CAP
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"
if ! command -v nvcc >/dev/null; then
  echo "!! no nvcc (set CUDA_HOME): the extension would build without its CUDA kernels and their tests would skip"
  FAILED+=(nvcc)
else
  nvcc --version | tail -n1
fi
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST CUDA_HOME=${CUDA_HOME:-}"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
run build "$T_BUILD" 180 "$PY" -m pip install -q --no-build-isolation -e ".[test]"
# The CUDA tests skip (and so "pass") without the kernel: fail here instead.
"$PY" - <<'PYEOF' || FAILED+=(cuda-backend)
import sys
import gcln_fast, gcln_fast.ops as ops
backends = gcln_fast.available_backends("cuda")
print("backends for cuda tensors:", backends)
if ops.EXTENSION_ERROR:
    print("extension failed to load:", ops.EXTENSION_ERROR)
sys.exit(0 if "cuda" in backends else 1)
PYEOF

phase 3/4 "test: pytest (CUDA kernel tests first, then the whole suite)"
unset TRITON_INTERPRET
run test-cuda "$T_TEST_CUDA" 150 "$PY" -m pytest -q -x -rs "${MARKERS[@]}" tests/test_qnt_cuda.py "${EXTRA_PYTEST[@]}"
run test-rest "$T_TEST_REST" 90 "$PY" -m pytest -q -rs "${MARKERS[@]}" tests --ignore=tests/test_qnt_cuda.py "${EXTRA_PYTEST[@]}"

phase 4/4 "bench: bench/bench_qnt.py --device cuda"
mkdir -p results
run bench "$T_BENCH" 60 "$PY" bench/bench_qnt.py --device cuda --json results/gpu_bench.json --md results/gpu_bench.md \
  "${EXTRA_BENCH[@]}"
run bench-triton-variants 60 0 "$PY" bench/bench_triton_variants.py --shapes 64x3x512x512

phase done "total $((SECONDS - START))s"
if [ "${#FAILED[@]}" -ne 0 ]; then
  echo "FAILED phases: ${FAILED[*]}"
  exit 1
fi
echo "all phases passed"
