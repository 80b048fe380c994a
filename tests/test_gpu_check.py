"""bench/gpu_check.sh, run here with its GPU steps skipped, so that its first real run is not its first run.

The dry run (GPU_CHECK_DRY_RUN=1) goes through every phase with this Python: the
environment report, the build it would run, the two pytest phases (collection only),
each benchmark script with its real options (and --help), the time limits and the
failure summary. Without the dry-run switch, on a machine whose torch sees no GPU, the
script must stop within seconds and say why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_check(tmp_path, **env):
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), **env}
    full.pop("TRITON_INTERPRET", None)  # the script unsets it itself; keep the environment honest
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def phases(out: str) -> list[str]:
    return re.findall(r"^\[(\d/4)\] \S+ \(\+\d+s\)", out, flags=re.M)


@pytest.mark.slow
def test_dry_run_goes_through_every_phase(tmp_path):
    rc, out = run_check(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert rc == 0, out
    assert phases(out) == ["0/4", "1/4", "2/4", "3/4", "4/4"], out
    assert f"torch {torch.__version__}" in out
    assert "would run: " in out and "pip install -q --no-build-isolation --no-deps --no-index -e ." in out
    # Both test phases collected (pytest prints per-file counts), kernel tests first.
    assert out.index("tests/test_qnt_cuda.py:") < out.index("tests/test_qnt_cpu.py:")
    assert "bench/bench_qnt.py --device cuda" in out and "bench/bench_triton_variants.py" in out
    assert ("bench/bench_jpeg.py" in out) == (ROOT / "bench" / "bench_jpeg.py").exists()
    assert "all phases passed" in out
    assert (tmp_path / "gpu_check.log").exists(), "the log is copied to $OUT"


@pytest.mark.slow
def test_a_failing_phase_is_reported_and_the_later_ones_still_run(tmp_path):
    # pytest rejects the option (usage error): both test phases fail, the benchmarks still run.
    rc, out = run_check(tmp_path, GPU_CHECK_DRY_RUN="1", PYTEST_ARGS="--no-such-option")
    assert rc == 1, out
    assert "!! test-kernels: exit status 4" in out and "!! test-rest: exit status 4" in out
    assert phases(out)[-2:] == ["3/4", "4/4"]
    assert "FAILED phases: test-kernels test-rest" in out


def test_time_limits_skip_phases_instead_of_overrunning(tmp_path):
    rc, out = run_check(tmp_path, GPU_CHECK_DRY_RUN="1", T_TOTAL="3", PYTEST_MARKERS="")
    assert rc == 1, out
    assert "!! test-kernels: skipped, no time left" in out and "!! bench: skipped, no time left" in out
    assert phases(out) == ["0/4", "1/4", "2/4", "3/4", "4/4"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_without_a_gpu_it_says_why_within_seconds(tmp_path):
    rc, out = run_check(tmp_path)
    assert rc == 2, out
    assert "cannot run the GPU check: no Python here has a torch that sees a GPU" in out
    assert "sees no GPU" in out or "CPU-only build" in out
    assert phases(out) == ["0/4"], "nothing is built or run after the answer"


def test_a_venv_that_sees_the_preinstalled_packages(tmp_path):
    venv = tmp_path / "venv"
    rc, out = run_check(tmp_path, GPU_CHECK_DRY_RUN="1", GPU_CHECK_VENV=str(venv), T_TEST_KERNELS="1",
                        T_TEST_REST="1", T_BENCH="1", T_BENCH_TRITON="1", T_BENCH_JPEG="1")  # fmt: skip
    assert f"venv: {venv}" in out, out
    assert f"would run: {venv}/bin/python -m pip install" in out
    assert "gcln_fast imports from" in out, "the venv's Python imports the package and torch"


def test_triton_variants_benchmark_rows_on_the_interpreter(monkeypatch):
    """bench/bench_triton_variants.py's measuring code, on CPU tensors under the interpreter with
    a stand-in timer: every form's rows, a forward that matches the reference."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs the Triton interpreter (set by conftest.py without a GPU)")
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import bench_triton_variants as bench

    from gcln_fast.kernels import qnt_triton

    def timer(fn):
        fn()
        return 1.0

    rows = bench.bench_case(qnt_triton, (1, 2, 8, 9), "float32", "sample", True, device="cpu", timer=timer)
    kernels = [(r["kernel"], r["form"]) for r in rows]
    assert kernels[0] == ("clone", "-") and len(rows) == 1 + 3 * len(bench.FORMS)
    assert {f for _, f in kernels[1:]} == {f"{v}/{p}" for v, p in bench.FORMS}
    assert all(r["max abs err vs reference"] < 1e-5 for r in rows if r["kernel"] == "forward")
