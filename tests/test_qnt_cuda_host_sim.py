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

from helpers import SURROGATES, assert_grads_close, assert_qnt_close, make_q, rand, randn

ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = ROOT / "csrc" / "cuda" / "tests"
H200_SMS = 132
KERNELS = ("step_table_kernel", "qnt_forward_kernel", "qnt_backward_kernel", "qnt_grad_q_final_kernel")
TABLE_MODES = ("all", "range", "global")  # TableMode in qnt_cuda_kernels.cuh
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


def canonical(q, x, scale=255.0):
    """q in any form as the ops' float32 (Nq, Cq, 8, 8) table."""
    return canonical_q(q, x, scale)


def launches(sim):
    """(kernel, grid) of each launch of the last call, and the forward's table mode."""
    flat = sim.launches()
    out = []
    for i in range(0, len(flat), 3):
        kernel = KERNELS[flat[i]]
        out.append(
            (kernel, flat[i + 1], TABLE_MODES[flat[i + 2]]) if kernel == "qnt_forward_kernel" else (kernel, flat[i + 1])
        )
    return out


def blocks(shape):
    n, c, h, w = shape
    return n * c * math.ceil(h / 8) * math.ceil(w / 8)


def forward(sim, x, q, scale=255.0, surrogate="identity", soft=False, order=0):
    return sim.qnt(x, canonical(q, x, scale), scale, surrogate, soft, H200_SMS, order)


def backward(sim, gy, x, q, surrogate, need_x=True, need_q=True, sms=H200_SMS, order=0):
    return sim.qnt_backward(gy, x, canonical(q, x), 255.0, surrogate, False, need_x, need_q, sms, order)


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
# a last CTA with few groups) and 7 channels.
SHAPES = [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 33, 65), (2, 1, 15, 1), (1, 3, 8, 8), (2, 7, 17, 23), (3, 4, 40, 44)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMS = ["scalar", "freq", "channel", "sample1", "sample"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", FORMS)
def test_forward_every_thread_matches_reference(sim, shape, dtype, form):
    x = rand(shape, dtype)
    q = make_q(form, shape)
    y = forward(sim, x, q)
    assert y.dtype == dtype and y.shape == x.shape
    assert_qnt_close(y, x, q)
    assert launches(sim)[-1][:2] == ("qnt_forward_kernel", math.ceil(blocks(shape) / GROUPS))


# Where the forward finds its tables: all in shared memory (at most 8), the
# CTA's range of consecutive tables (per-sample, table index non-decreasing
# along the block order), or precomputed step tables in global memory.
MODE_CASES = [
    ((2, 8, 9, 9), "channel", False, "all"),
    ((4, 2, 17, 16), "sample", False, "all"),
    ((2, 9, 9, 17), "channel", False, "global"),
    ((4, 3, 32, 33), "sample", False, "range"),  # 20 blocks per table: a CTA spans 3 tables
    ((9, 3, 16, 16), "sample1", False, "range"),  # 12 blocks per image
    ((12, 3, 16, 15), "sample1", True, "range"),  # channels-last, one table per image
    ((5, 3, 8, 8), "sample", False, "global"),  # one block per table: 32 tables per CTA
    ((4, 3, 32, 32), "sample", True, "global"),  # channels-last cycles through per-channel tables
    ((1, 12, 24, 24), "channel", False, "range"),  # N = 1: per-channel tables are per-sample too
]


@pytest.mark.parametrize("shape,form,channels_last,mode", MODE_CASES, ids=lambda v: str(v))
def test_forward_table_modes(sim, shape, form, channels_last, mode):
    x = rand(shape, seed=3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    q = make_q(form, shape, seed=4)
    assert_qnt_close(forward(sim, x, q), x, q)
    steps = [math.ceil(canonical(q, x)[:, :, 0, 0].numel() * 64 / 256)] if mode == "global" else []
    assert launches(sim) == [("step_table_kernel", s) for s in steps] + [
        ("qnt_forward_kernel", math.ceil(blocks(shape) / GROUPS), mode)
    ]


@pytest.mark.parametrize("surrogate", ["cubic", "sine"])
@pytest.mark.parametrize("form", ["scalar", "sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_soft_forward(sim, surrogate, form, dtype):
    x = rand((2, 3, 11, 13), dtype, seed=1)
    q = make_q(form, x.shape)
    y = forward(sim, x, q, surrogate=surrogate, soft=True)
    assert_qnt_close(y, x, q, surrogate=surrogate, soft_forward=True)
    assert not torch.equal(y, forward(sim, x, q, surrogate=surrogate))


def test_hard_forward_is_the_same_for_every_surrogate(sim):
    x = rand((2, 3, 11, 13), seed=2)
    outs = [forward(sim, x, 7.0, surrogate=s) for s in SURROGATES] + [forward(sim, x, 7.0, soft=True)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


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
@pytest.mark.parametrize("form", ["channel", "sample"])
def test_forward_layouts(sim, view, form):
    shape, make_view = VIEWS[view]
    x = poisoned_view(shape, torch.float32, make_view)
    q = make_q(form, shape)
    y = forward(sim, x, q)
    assert y.stride() == torch.empty_like(x).stride()
    assert_qnt_close(y, x.contiguous(), q)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_forward_scale(sim, scale):
    x = rand((2, 2, 11, 19))
    q = make_q("freq", x.shape) / (50 if scale == 1.0 else 1)
    assert_qnt_close(forward(sim, x, q, scale), x, q, scale)


def test_forward_does_not_depend_on_the_thread_schedule(sim):
    x = rand((2, 5, 26, 35)).contiguous(memory_format=torch.channels_last)
    q = make_q("sample", x.shape)
    outs = [forward(sim, x, q, surrogate="sine", soft=True, order=order) for order in range(3)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


# ----------------------------------------------------------------------------- backward


def backward_ctas(shape, table, sms):
    nq, cq = table.shape[:2]
    per_table = blocks(shape) // (nq * cq)
    return max(1, min(math.ceil(per_table / GROUPS), math.ceil(sms * 4 / (nq * cq))))


# Odd sizes everywhere: every block row and column kind of the replicate adjoint.
# The last: more than 16 CTAs per table on 132 SMs (two rows per stage-2 thread).
GRAD_SHAPES = [(2, 3, 9, 14), (1, 2, 33, 65), (2, 7, 17, 23), (5, 3, 40, 41), (4, 3, 64, 72)]


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("form", ["tensor0d", "channel", "sample"])
# 1 SM: few CTAs, so the grid-stride loop runs many times; 132 (H200): one pass each.
@pytest.mark.parametrize("sms", [1, H200_SMS])
def test_backward_every_thread_matches_reference(sim, shape, surrogate, form, sms):
    x, gy = rand(shape), randn(shape, seed=5)
    q = make_q(form, shape)
    need_x = surrogate != "identity"  # never asked for identity: grad_x is grad_y itself
    gx, gq = backward(sim, gy, x, q, surrogate, need_x=need_x, sms=sms)
    table = canonical(q, x)
    assert gq.shape == table.shape and gq.dtype == torch.float32
    assert_grads_close(gx if need_x else None, gq, x, gy, q, surrogate=surrogate)
    ctas = backward_ctas(shape, table, sms)
    tables = table.shape[0] * table.shape[1]
    assert launches(sim) == [("qnt_backward_kernel", ctas * tables), ("qnt_grad_q_final_kernel", tables)]


def test_backward_identity_grad_x_is_grad_y(sim):
    # Not a call the op receives, but the kernel's answer must still be exact up to round-off.
    x, gy = rand((2, 3, 13, 11)), randn((2, 3, 13, 11), seed=1)
    gx, _ = backward(sim, gy, x, 6.0, "identity", need_q=False)
    torch.testing.assert_close(gx, gy, rtol=0, atol=2e-6)


@pytest.mark.parametrize("surrogate", ["cubic", "sine"])
def test_backward_outputs_not_wanted_are_empty_and_the_rest_unchanged(sim, surrogate):
    x, gy = rand((3, 2, 19, 21)), randn((3, 2, 19, 21), seed=2)
    q = make_q("sample", x.shape)
    gx, gq = backward(sim, gy, x, q, surrogate)
    gx_only, empty_q = backward(sim, gy, x, q, surrogate, need_q=False)
    assert [k for k, *_ in launches(sim)] == ["qnt_backward_kernel"]
    empty_x, gq_only = backward(sim, gy, x, q, surrogate, need_x=False)
    assert empty_q.shape == (0,) and empty_x.shape == (0,) and empty_x.dtype == x.dtype
    assert torch.equal(gx_only, gx) and torch.equal(gq_only, gq)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "strided_grad"])
def test_backward_layouts_and_dtypes(sim, dtype, layout):
    shape = (2, 3, 24, 30)
    x = rand(shape, dtype)
    gy = randn(shape, dtype, seed=6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        gy = poisoned_view(shape, dtype, lambda t: t[:2, 1:4, ::3, ::3], seed=6)
    q = make_q("sample1", shape)
    gx, gq = backward(sim, gy, x, q, "cubic", sms=2)
    assert gx.dtype == dtype and gx.stride() == torch.empty_like(x).stride()
    assert_grads_close(gx, gq, x.contiguous(), gy.contiguous(), q, surrogate="cubic")


def test_backward_accepts_grad_y_of_another_dtype(sim):
    x = rand((2, 3, 16, 24), torch.float16)
    gy = randn((2, 3, 16, 24), seed=2)
    q = torch.full((3, 8, 8), 5.0)
    got, want = backward(sim, gy, x, q, "sine", sms=3), backward(sim, gy.half(), x, q, "sine", sms=3)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("form", ["scalar", "channel", "sample1"])
def test_backward_is_deterministic_under_any_thread_schedule(sim, form):
    x, gy = rand((3, 3, 30, 37)), randn((3, 3, 30, 37), seed=7)
    q = make_q(form, x.shape)
    outs = [backward(sim, gy, x, q, "cubic", sms=2, order=order) for order in range(3)]
    for gx, gq in outs[1:]:
        assert torch.equal(gx, outs[0][0]) and torch.equal(gq, outs[0][1])


def test_empty_tensors_launch_nothing(sim):
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5)]:
        x = torch.empty(shape)
        assert forward(sim, x, 4.0).shape == shape
        assert launches(sim) == []
        gx, gq = sim.qnt_backward(x, x, torch.full((1, 3, 8, 8), 4.0), 255.0, "cubic", False, True, True, 1, 0)
        assert launches(sim) == [] and gx.shape == shape and gq.shape == (1, 3, 8, 8) and not bool(gq.any())


def test_checks_of_the_host_side(sim):
    x = rand((1, 3, 8, 8))
    with pytest.raises(ValueError, match="q must have shape"):
        sim.qnt(x, torch.ones(1, 2, 8, 8), 255.0, "identity", False, 1, 0)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        sim.qnt(x, torch.ones(1, 1, 8, 8), 255.0, "relu", False, 1, 0)
    with pytest.raises(ValueError, match="grad_y must have"):
        sim.qnt_backward(x[:, :, :4], x, torch.ones(1, 1, 8, 8), 255.0, "cubic", False, True, True, 1, 0)


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


# ----------------------------------------------------------------------------- the tie rule on 8-bit images


def test_rounding_decisions_on_8bit_images_equal_the_float64_references(sim):
    """test_qnt_ties.py's check, through the simulated CUDA kernels (host arithmetic: the device's
    fused multiply-adds move u by round-off, which the tie window absorbs): no flip at an exact
    tie, for [0, 1] and integer-valued inputs, a shared, a JPEG and per-sample JPEG tables."""
    from test_qnt_ties import FORMS, as_input, decisions, jpeg_table

    from gcln_fast.data.embedded import generate
    from gcln_fast.reference import qnt_coefficients, qnt_reference

    n = 250
    g = torch.Generator().manual_seed(0)
    sets = {
        "embedded": torch.from_numpy(generate(n, seed=0, split="test")[0]),
        "uint8": torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
    }
    qualities = torch.randint(20, 96, (n,), generator=g).tolist()
    tables = {
        "q10": 10.0,
        "jpeg50": jpeg_table(50),
        "per-sample": torch.stack([jpeg_table(q) for q in qualities])[:, None],
    }
    for k in sets.values():
        exact_u = qnt_coefficients(k.double(), 1.0)
        for q in tables.values():
            table = canonical_q(q, k.float(), 1.0, torch.float64)
            exact_tie = (exact_u / table[:, :, None, None]) % 1 == 0.5
            assert int(exact_tie.sum()) > 10  # the case the rule is for
            for form, scale in FORMS.items():
                x = as_input(k, form)
                want = decisions(qnt_reference(x.double(), table, scale), table, scale)
                got = decisions(forward(sim, x, q, scale), table, scale)
                assert int(((got != want) & exact_tie).sum()) == 0
                assert int((got != want).sum()) <= want.numel() // 100_000
