"""The CUDA kernels simulated on the CPU: every CTA and thread of the real launches.

``csrc/cuda/tests/qnt_cuda_sim.cpp`` runs the host side of the CUDA ops
(``csrc/cuda/qnt_cuda_launch.h``: checks, geometry, grid sizes, arguments) and
the kernels' CTA programs (``csrc/cuda/qnt_cuda_kernels.cuh``, the code the
``__global__`` kernels call) for every thread, phase by phase between the same
barriers, with every global and shared memory access checked: out-of-bounds or
unwritten reads, double or missing writes, and shared-memory accesses that no
barrier orders (a missing ``__syncwarp``/``__syncthreads``) fail the op. No GPU
is needed; the simulation is built here with g++ (about 25 s the first time,
cached under pytest's cache directory, rebuilt by ninja when a source changes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from gcln_fast._validate import canonical_q

from helpers import assert_grads_close, assert_qnt_close, make_q, rand, randn

ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = ROOT / "csrc" / "cuda" / "tests"
H200_SMS = 132
KERNELS = ("step_table_kernel", "qnt_forward_kernel", "qnt_grad_q_partial_kernel", "qnt_grad_q_final_kernel")
GROUPS = 32  # kGroups: 8x8 blocks per CTA


@pytest.fixture(scope="session")
def sim(request):
    """The simulation's ops (``torch.ops.gcln_fast_cuda_sim``), built once per session."""
    from torch.utils import cpp_extension

    if os.environ.get("GCLN_FAST_SIM_BUILD_DIR"):
        build = Path(os.environ["GCLN_FAST_SIM_BUILD_DIR"])
    elif getattr(request.config, "cache", None) is not None:  # .pytest_cache: kept between runs
        build = Path(request.config.cache.mkdir("gcln_fast_cuda_host_sim"))
    else:  # -p no:cacheprovider
        build = request.getfixturevalue("tmp_path_factory").mktemp("gcln_fast_cuda_host_sim")
    build.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name="gcln_fast_cuda_host_sim",
        sources=[str(SIM_DIR / "qnt_cuda_sim.cpp"), str(SIM_DIR / "qnt_cuda_sim_checker.cpp")],
        extra_include_paths=[str(ROOT / "csrc"), str(ROOT / "csrc" / "cuda")],
        extra_cflags=["-O1", "-DGCLN_QNT_HOST_SIM", "-Wall", "-Wextra", "-Werror"],
        build_directory=str(build),
        is_python_module=False,
    )
    return torch.ops.gcln_fast_cuda_sim


def canonical(q, x):
    """q in any form as the ops' float32 (Nq, Cq, 8, 8) table."""
    return canonical_q(q, x, 255.0)


def launches(sim):
    flat = sim.launches()
    return [(KERNELS[flat[i]], flat[i + 1]) for i in range(0, len(flat), 2)]


def blocks(shape):
    n, c, h, w = shape
    return n * c * math.ceil(h / 8) * math.ceil(w / 8)


def poisoned_view(shape, dtype, make_view, seed=0):
    """A view of a NaN-filled base whose viewed elements hold random data: a read of
    anything outside the view (a wrong index that stays inside the allocation) gives NaN."""
    base = torch.full((3, 9, 70, 90), float("nan"), dtype=dtype)
    view = make_view(base)
    assert view.shape == shape, view.shape
    if view.untyped_storage().data_ptr() != base.untyped_storage().data_ptr():
        return view.copy_(rand(shape, dtype, seed))  # a copy (channels-last): nothing outside to poison
    where = make_view(torch.arange(base.numel()).view(base.shape))  # storage positions (repeats if expanded)
    base.view(-1)[where.flatten()] = rand(shape, dtype, seed).flatten()
    return view


# ----------------------------------------------------------------------------- forward

# Odd sizes (partial edge blocks one or both ways, planes smaller than a block,
# a last CTA with few groups), per-channel tables held in shared memory (C <= 4)
# and in global step tables (C = 7).
SHAPES = [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 33, 65), (2, 1, 15, 1), (1, 3, 8, 8), (2, 7, 17, 23), (3, 4, 40, 44)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", ["scalar", "freq", "channel"])
def test_forward_every_thread_matches_reference(sim, shape, dtype, form):
    x = rand(shape, dtype)
    q = make_q(form, shape)
    y = sim.qnt(x, canonical(q, x), 255.0, H200_SMS, 0)
    assert y.dtype == dtype and y.shape == x.shape
    assert_qnt_close(y, x, q)
    cq = shape[1] if form == "channel" else 1
    want = ([("step_table_kernel", math.ceil(cq * 64 / 256))] if cq > 4 else []) + [
        ("qnt_forward_kernel", math.ceil(blocks(shape) / GROUPS))
    ]
    assert launches(sim) == want


VIEWS = {
    "channels_last": ((2, 3, 20, 27), lambda t: t[:2, :3, :20, :27].contiguous(memory_format=torch.channels_last)),
    "strided": ((2, 4, 24, 30), lambda t: t[:2, 1:5, ::3, ::3]),
    "transposed": ((2, 3, 27, 20), lambda t: t[:2, :3, :20, :27].transpose(2, 3)),
    "expanded": ((3, 2, 13, 17), lambda t: t[:1, :2, :13, :17].expand(3, -1, -1, -1)),
    "misaligned": ((1, 5, 9, 19), lambda t: t.flatten()[1 : 1 + 5 * 9 * 19].view(1, 5, 9, 19)),
    "channels_last_slice": (
        (2, 3, 17, 22),
        lambda t: t.contiguous(memory_format=torch.channels_last)[:2, :3, 3:20, 5:27],
    ),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_layouts(sim, view, dtype):
    shape, make_view = VIEWS[view]
    x = poisoned_view(shape, dtype, make_view)
    if view == "channels_last":  # contiguous() made a copy: nothing to poison, but the layout is the point
        assert x.is_contiguous(memory_format=torch.channels_last)
    q = make_q("channel", shape)
    y = sim.qnt(x, canonical(q, x), 255.0, H200_SMS, 0)
    assert y.stride() == torch.empty_like(x).stride()
    assert_qnt_close(y, x.contiguous(), q)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_forward_scale(sim, scale):
    x = rand((2, 2, 11, 19))
    q = make_q("freq", x.shape) / (50 if scale == 1.0 else 1)
    assert_qnt_close(sim.qnt(x, canonical_q(q, x, scale), scale, H200_SMS, 0), x, q, scale)


def test_forward_does_not_depend_on_the_thread_schedule(sim):
    x = rand((2, 5, 26, 35)).contiguous(memory_format=torch.channels_last)
    table = canonical(make_q("channel", (2, 5)), x)
    outs = [sim.qnt(x, table, 255.0, H200_SMS, order) for order in range(3)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


# ----------------------------------------------------------------------------- grad_q


def grad_q_ctas(shape, cq, sms):
    count = blocks(shape) // (cq if cq > 1 else 1)
    return max(1, min(math.ceil(count / GROUPS), math.ceil(sms * 4 / cq)))


@pytest.mark.parametrize(
    # the last: more than 16 CTAs per table on 132 SMs (two rows per stage-2 thread)
    "shape",
    [(2, 3, 9, 14), (1, 2, 33, 65), (2, 7, 17, 23), (5, 3, 40, 41), (4, 3, 64, 72)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("form", ["tensor0d", "freq", "channel"])
# 1 SM: few CTAs, so the grid-stride loop runs many times; 132 (H200): one pass each.
@pytest.mark.parametrize("sms", [1, H200_SMS])
def test_grad_q_every_thread_matches_reference(sim, shape, form, sms):
    x, gy = rand(shape), randn(shape, seed=5)
    q = make_q(form, shape)
    table = canonical(q, x)
    got = sim.qnt_grad_q(gy, x, table, 255.0, sms, 0)
    assert got.shape == table.shape and got.dtype == torch.float32
    assert_grads_close(None, got, x, gy, q)
    ctas = grad_q_ctas(shape, table.shape[1], sms)
    assert launches(sim) == [
        ("qnt_grad_q_partial_kernel", ctas * table.shape[1]),
        ("qnt_grad_q_final_kernel", table.shape[1]),
    ]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "strided_grad"])
def test_grad_q_layouts_and_dtypes(sim, dtype, layout):
    shape = (2, 3, 24, 30)
    x = rand(shape, dtype)
    gy = randn(shape, dtype, seed=6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        gy = poisoned_view(shape, dtype, lambda t: t[:2, 1:4, ::3, ::3], seed=6)
    q = make_q("channel", shape)
    got = sim.qnt_grad_q(gy, x, canonical(q, x), 255.0, 2, 0)
    assert_grads_close(None, got, x.contiguous(), gy.contiguous(), q)


def test_grad_q_accepts_grad_y_of_another_dtype(sim):
    x = rand((2, 3, 16, 24), torch.float16)
    gy = randn((2, 3, 16, 24), seed=2)
    table = torch.full((1, 3, 8, 8), 5.0)
    assert torch.equal(sim.qnt_grad_q(gy, x, table, 255.0, 3, 0), sim.qnt_grad_q(gy.half(), x, table, 255.0, 3, 0))


@pytest.mark.parametrize("cq", [1, 3])
def test_grad_q_is_deterministic_under_any_thread_schedule(sim, cq):
    x, gy = rand((3, 3, 30, 37)), randn((3, 3, 30, 37), seed=7)
    table = torch.full((1, cq, 8, 8), 5.0)
    outs = [sim.qnt_grad_q(gy, x, table, 255.0, 2, order) for order in range(3)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_empty_tensors_launch_nothing(sim):
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5)]:
        x = torch.empty(shape)
        assert sim.qnt(x, torch.full((1, 1, 8, 8), 4.0), 255.0, 1, 0).shape == shape
        assert launches(sim) == []
        gq = sim.qnt_grad_q(x, x, torch.full((1, 3, 8, 8), 4.0), 255.0, 1, 0)
        assert launches(sim) == [] and gq.shape == (1, 3, 8, 8) and not bool(gq.any())


def test_checks_of_the_host_side(sim):
    x = rand((1, 3, 8, 8))
    with pytest.raises(ValueError, match="q must have shape"):
        sim.qnt(x, torch.ones(1, 2, 8, 8), 255.0, 1, 0)
    with pytest.raises(ValueError, match="grad_y must have"):
        sim.qnt_grad_q(x[:, :, :4], x, torch.ones(1, 1, 8, 8), 255.0, 1, 0)


# ----------------------------------------------------------------------------- the checker itself

FAULTS = {
    1: "no barrier of both in between",  # write, then a neighbour reads: no __syncwarp
    2: "no barrier of both in between",  # a group barrier does not order another group's write
    3: "read with no barrier",  # overwriting a word another thread read in the last phase
    4: "which no thread of the CTA wrote",
    5: "outside the CTA's",
    6: "a second time",
    7: "was never written",
    8: "outside every tensor",
    9: "barrier inside a per-thread phase",
    10: "not aligned to 16 bytes",
}


def test_checker_passes_a_correct_program(sim):
    sim.checker_selftest(0)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_checker_reports_each_kind_of_fault(sim, fault):
    with pytest.raises(RuntimeError, match=FAULTS[fault]):
        sim.checker_selftest(fault)
