#!/usr/bin/env bash
# One-command GPU check of gcln_fast on a machine with one NVIDIA GPU, a
# Python whose torch sees it, and a CUDA toolkit (nvcc). Nothing is
# downloaded: it builds against the torch already installed.
#
#   bash bench/gpu_check.sh            # from anywhere; it works in the repository root
#
#   [0/4] env     (seconds) which Python, torch, Triton, nvcc and GPU it found; if it
#                 cannot run, it says why and stops here with exit status 2
#   [1/4] build   pip install --no-build-isolation --no-deps --no-index -e . into that
#                 Python's environment (or GPU_CHECK_VENV), CUDA kernels for this GPU only
#   [2/4] test    the CUDA and Triton kernel tests first, then the rest of the suite
#                 (PYTEST_MARKERS, default "not slow": the slow end-to-end runs need no GPU;
#                 pytest-xdist workers where installed; one autotune config per Triton form)
#   [3/4] bench   bench/bench_qnt.py --device cuda, bench/bench_triton_variants.py and,
#                 where it exists, bench/bench_jpeg.py
#   [4/4] done    the failed phases, if any; exit status 0 only if every phase passed
#
# Python: $PYTHON if set; otherwise .venv/bin/python if its torch sees a GPU; otherwise
# python3. GPU_CHECK_VENV=DIR installs into a venv at DIR that sees that Python's
# packages (torch, triton, pytest are not copied) instead of into its environment.
# Time: the whole run is bounded by T_TOTAL (default 470 s, under 8 minutes); each
# phase has its own limit (T_BUILD, T_TEST_KERNELS, T_TEST_REST, T_BENCH, T_BENCH_TRITON,
# T_BENCH_JPEG, in seconds) and never eats into the time kept for the phases after it;
# a phase that fails or runs out of time is reported and the later phases still run.
# Results: results/gpu_bench.{json,md}, results/gpu_check.log; also copied to $OUT when
# that is a directory (the device tool brings $OUT back). Extra arguments:
# PYTEST_ARGS, BENCH_ARGS (space-separated).
#
# GPU_CHECK_DRY_RUN=1 runs the same phases with the GPU steps skipped, on any machine
# (tests/test_gpu_check.py): no GPU or nvcc needed, the build is only named, pytest
# only collects, and each benchmark script gets its real options and --help.
set -euo pipefail

cd "$(dirname "$0")/.."
START=$SECONDS
DRY=
[ "${GPU_CHECK_DRY_RUN:-0}" = 1 ] && DRY=1
T_TOTAL=${T_TOTAL:-470}
T_BUILD=${T_BUILD:-150}
T_TEST_KERNELS=${T_TEST_KERNELS:-150}
T_TEST_REST=${T_TEST_REST:-90}
T_BENCH=${T_BENCH:-90}
T_BENCH_TRITON=${T_BENCH_TRITON:-60}
T_BENCH_JPEG=${T_BENCH_JPEG:-30}
MARKERS=${PYTEST_MARKERS-not slow}
read -r -a EXTRA_PYTEST <<< "${PYTEST_ARGS:-}"
read -r -a EXTRA_BENCH <<< "${BENCH_ARGS:-}"
FAILED=()
mkdir -p results
exec > >(tee results/gpu_check.log) 2>&1

phase() { printf '\n[%s] %s (+%ds) %s\n' "$1" "$(date -u +%H:%M:%SZ)" "$((SECONDS - START))" "$2"; }
# run NAME LIMIT RESERVE CMD...: CMD under `timeout` for at most LIMIT seconds and
# never past T_TOTAL - RESERVE (time kept for the later phases); a failure is recorded,
# not fatal. In a dry run, CMD is whatever the caller chose for it.
run() {
  local name=$1 limit=$2 reserve=$3 rc=0
  shift 3
  local left=$((T_TOTAL - (SECONDS - START) - reserve))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "!! $name: skipped, no time left (T_TOTAL=$T_TOTAL)"
    FAILED+=("$name")
    return 0
  fi
  echo "+ $*"
  timeout --kill-after=5 "$limit" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "!! $name: timed out after ${limit}s"; else echo "!! $name: exit status $rc"; fi
    FAILED+=("$name")
  fi
  return 0
}
# The cannot-run exit: said in the first seconds, before anything is built.
cannot_run() {
  echo "!! cannot run the GPU check: $*"
  exit 2
}

# ----------------------------------------------------------------------------- [0/4] env
phase 0/4 "env: Python, torch, Triton, nvcc, GPU${DRY:+ (dry run: GPU steps skipped)}"
# One Python process per candidate: a report, then "ok|cpu|no <torch version> <capability>".
probe() {
  "$1" - <<'PYEOF' 2>/dev/null || echo "no - - ($1 failed to run)"
import importlib.util, sys
print(f"  python {sys.version.split()[0]} at {sys.executable}")
try:
    import torch
except Exception as exc:
    print(f"no - - torch does not import ({type(exc).__name__}: {exc})")
    sys.exit()
version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
gpu = torch.version.cuda is not None and torch.cuda.is_available()
print(f"  torch {torch.__version__}, CUDA {torch.version.cuda}" + (f", GPU {torch.cuda.get_device_name(0)}" if gpu else ""))
try:
    import triton
    print(f"  triton {triton.__version__}")
except Exception as exc:
    print(f"  triton: not usable ({type(exc).__name__}): the Triton tests and benchmark will skip")
missing = [m for m in ("pytest", "hypothesis", "ninja", "setuptools") if importlib.util.find_spec(m) is None]
if missing:
    print(f"  !! not installed: {', '.join(missing)} (the phases that need them will fail)")
if version < (2, 6):
    print(f"no {torch.__version__} - torch {torch.__version__} is too old: gcln_fast needs torch >= 2.6 (triton_op)")
elif torch.version.cuda is None:
    print(f"cpu {torch.__version__} - torch {torch.__version__} is a CPU-only build")
elif not gpu:
    print(f"cpu {torch.__version__} - torch {torch.__version__} sees no GPU")
else:
    print("ok %s %d.%d" % (torch.__version__, *torch.cuda.get_device_capability(0)))
PYEOF
}
if [ -n "${PYTHON:-}" ]; then
  CANDIDATES=("$PYTHON")
else
  CANDIDATES=()
  [ -x .venv/bin/python ] && CANDIDATES+=(.venv/bin/python)
  CANDIDATES+=(python3)
fi
PY=
WHY=()
for cand in "${CANDIDATES[@]}"; do
  command -v "$cand" >/dev/null || { WHY+=("$cand: not found;"); continue; }
  echo "$cand:"
  report=$(probe "$cand")
  printf '%s\n' "$report" | sed '$d'
  read -r verdict TORCH_VERSION CAP why <<< "$(printf '%s\n' "$report" | tail -n1)"
  # A dry run also takes a torch that sees no GPU (as if it were for capability 9.0).
  if [ "$verdict" = ok ] || { [ -n "$DRY" ] && [ "$verdict" = cpu ]; }; then
    PY=$cand
    [ "$verdict" = cpu ] && CAP=9.0
    break
  fi
  WHY+=("$cand: $why;")
done
if [ -z "$PY" ]; then
  cannot_run "no Python here has a torch that sees a GPU (${WHY[*]}). Point PYTHON at one with a CUDA build of torch >= 2.6."
fi
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"
if command -v nvcc >/dev/null; then
  echo "nvcc: $(nvcc --version | tail -n1) (CUDA_HOME=${CUDA_HOME:-unset})"
elif [ -z "$DRY" ]; then
  cannot_run "no nvcc (set CUDA_HOME): the extension would build without its CUDA kernels"
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$CAP}
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"

if [ -n "${GPU_CHECK_VENV:-}" ]; then
  # A venv that sees $PY's packages through a .pth (--system-site-packages alone would
  # show the base interpreter's, not those of a venv that $PY may itself be).
  "$PY" -m venv --without-pip "$GPU_CHECK_VENV"
  SITE=$("$GPU_CHECK_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PY" -c 'import site; print("\n".join(f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()))' \
    > "$SITE/_gpu_check_parent.pth"
  PY=$GPU_CHECK_VENV/bin/python
  "$PY" -c 'import torch' || cannot_run "the venv $GPU_CHECK_VENV does not see torch"
  echo "venv: $GPU_CHECK_VENV (sees the packages of the Python above)"
fi

# ----------------------------------------------------------------------------- [1/4] build
phase 1/4 "build: the extension with its CUDA kernels, against torch $TORCH_VERSION"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
BUILD=("$PY" -m pip install -q --no-build-isolation --no-deps --no-index -e .)
if [ -n "$DRY" ]; then
  echo "dry run: would run: ${BUILD[*]}"
  run build "$T_BUILD" 0 "$PY" -c 'import gcln_fast; print("gcln_fast imports from", gcln_fast.__file__)'
else
  unset GCLN_FAST_NO_CUDA
  run build "$T_BUILD" 150 "${BUILD[@]}"
fi
# The CUDA tests skip (and so "pass") without the kernel: fail here instead.
"$PY" - "$DRY" <<'PYEOF' || FAILED+=(cuda-backend)
import sys
import gcln_fast, gcln_fast.ops as ops
backends = gcln_fast.available_backends()
print("backends:", backends)
if ops.EXTENSION_ERROR:
    print("!! the extension failed to load:", ops.EXTENSION_ERROR)
if getattr(ops, "TRITON_ERROR", None):
    print("!! the Triton backend failed to load:", ops.TRITON_ERROR)
sys.exit(0 if sys.argv[1] or "cuda" in backends else 1)
PYEOF

# ----------------------------------------------------------------------------- [2/4] test
phase 2/4 "test: the kernel tests, then the rest of the suite"
unset TRITON_INTERPRET
# The tests check results: one autotune configuration per Triton form (each is another
# compile); the benchmarks below tune over all of them.
export GCLN_FAST_TRITON_CONFIGS=first
COLLECT=()
[ -n "$DRY" ] && COLLECT=(--collect-only -q)
# Test files in parallel processes where pytest-xdist is installed (PYTEST_WORKERS, default 8).
WORKERS=()
if [ -z "$DRY" ] && "$PY" -c 'import xdist' 2>/dev/null && [ "${PYTEST_WORKERS:-8}" -gt 1 ]; then
  WORKERS=(-n "${PYTEST_WORKERS:-8}" --dist loadfile)
fi
KERNEL_TESTS=(tests/test_qnt_cuda.py tests/test_qnt_triton.py)
[ -f tests/test_qnt_backends.py ] && KERNEL_TESTS+=(tests/test_qnt_backends.py)
IGNORE=()
for f in "${KERNEL_TESTS[@]}"; do IGNORE+=(--ignore="$f"); done
run test-kernels "$T_TEST_KERNELS" 200 "$PY" -m pytest -q -rs ${MARKERS:+-m "$MARKERS"} "${COLLECT[@]}" \
  "${WORKERS[@]}" "${KERNEL_TESTS[@]}" "${EXTRA_PYTEST[@]}"
run test-rest "$T_TEST_REST" 120 "$PY" -m pytest -q -rs ${MARKERS:+-m "$MARKERS"} "${COLLECT[@]}" "${WORKERS[@]}" \
  tests "${IGNORE[@]}" "${EXTRA_PYTEST[@]}"
unset GCLN_FAST_TRITON_CONFIGS

# ----------------------------------------------------------------------------- [3/4] bench
phase 3/4 "bench: every backend on the GPU, the Triton kernel forms${DRY:+ (dry run: --help only)}"
HELP=()
[ -n "$DRY" ] && HELP=(--help)  # a dry run checks that each script imports and knows its options exist
run bench "$T_BENCH" $((T_BENCH_TRITON + T_BENCH_JPEG)) "$PY" bench/bench_qnt.py --device cuda \
  --json results/gpu_bench.json --md results/gpu_bench.md "${EXTRA_BENCH[@]}" "${HELP[@]}"
# The forms besides the default one compile for tens of seconds each: the tf32x3 dot is left out here.
run bench-triton "$T_BENCH_TRITON" "$T_BENCH_JPEG" "$PY" bench/bench_triton_variants.py --shapes 64x3x512x512 \
  --dtypes float32 --forms separable/ieee,butterfly/ieee,dot/ieee --json results/gpu_triton_variants.json \
  --md results/gpu_triton_variants.md "${HELP[@]}"
if [ -f bench/bench_jpeg.py ]; then
  run bench-jpeg "$T_BENCH_JPEG" 0 "$PY" bench/bench_jpeg.py --device cuda --no-compile --out results/gpu_jpeg "${HELP[@]}"
fi

# ----------------------------------------------------------------------------- [4/4] done
phase 4/4 "done: total $((SECONDS - START))s"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp results/gpu_check.log results/gpu_bench.* results/gpu_triton_variants.* results/gpu_jpeg.* "$OUT"/ 2>/dev/null || true
  echo "results copied to \$OUT"
fi
if [ "${#FAILED[@]}" -ne 0 ]; then
  echo "FAILED phases: ${FAILED[*]}"
  exit 1
fi
echo "all phases passed"
