"""What only the Triton backend (``gcln_fast.kernels``) has; the shared parity, gradient, opcheck
and compile tests run its default form through the ``backend`` fixture (test_qnt_backends.py).

Here: its device helpers (the DCT matrix, the tie rule bit for bit on dense samples, the
surrogates), every kernel form (``dot``, ``separable``, ``butterfly``) against the float64
reference and against finite differences, the forms against each other, determinism, the
generated source and the errors. Without a GPU the kernels run under the Triton
interpreter on CPU tensors (``TRITON_INTERPRET=1``, set by conftest.py): small shapes only.
"""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

import gcln_fast
from gcln_fast._validate import canonical_q
from gcln_fast.reference import dct_matrix, qnt_coefficients, round_tie, surrogate_slope, surrogate_value

from helpers import SURROGATES, assert_grads_close, assert_qnt_close, make_q, rand, randn

triton = pytest.importorskip("triton", reason="Triton is not installed")
import triton.language as tl  # noqa: E402

from gcln_fast.kernels import butterfly, device, qnt_triton  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and not qnt_triton.INTERPRET:
    pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (compiled Triton)")
VARIANTS = list(qnt_triton.VARIANTS)
# The interpreter runs the butterfly form's 64 per-block tensors op by op: keep its shapes tiny.
SMALL = {"dot": (2, 3, 11, 13), "separable": (2, 3, 11, 13), "butterfly": (1, 2, 9, 10)}
# Compiled (a GPU), every combination of constexprs is a compile of tens of seconds for the dot
# and butterfly forms: there they get one table form and the surrogates the finite-difference
# test compiles anyway; the default form (separable) gets everything.
FORMS_FWD = ["sample"] if CUDA else ["scalar", "channel", "sample"]
FORMS_BWD = ["sample"] if CUDA else ["tensor0d", "sample1", "sample"]


def table(q, x):
    return canonical_q(q, x, 255.0).to(DEVICE)


# --------------------------------------------------------------------------- device helpers


@triton.jit
def _dct_probe(out_ptr):
    k = tl.arange(0, 8)[:, None]
    n = tl.arange(0, 8)[None, :]
    tl.store(out_ptr + k * 8 + n, device.dct_entry(k, n))


@triton.jit
def _rounding_probe(u_ptr, r_ptr, v_ptr, d_ptr, N, SURROGATE: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
                    BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    u = tl.load(u_ptr + offs, mask=offs < N)
    r = device.round_tie(u, USE_LIBDEVICE)
    tl.store(r_ptr + offs, r, mask=offs < N)
    tl.store(v_ptr + offs, device.surrogate_value(u, r, SURROGATE, USE_LIBDEVICE), mask=offs < N)
    tl.store(d_ptr + offs, device.surrogate_slope(u, r, SURROGATE, USE_LIBDEVICE), mask=offs < N)


def rounding(u, surrogate, use_libdevice):
    """(R(u), s(u), s'(u)) by the kernels' device code."""
    u = u.to(DEVICE)
    r, v, d = (torch.empty_like(u) for _ in range(3))
    grid = (triton.cdiv(u.numel(), 4096),)
    _rounding_probe[grid](u, r, v, d, u.numel(), SURROGATE=SURROGATES.index(surrogate),
                          USE_LIBDEVICE=use_libdevice, BLOCK=4096)  # fmt: skip
    return r.cpu(), v.cpu(), d.cpu()


LIBDEVICE = [False] + ([True] if CUDA else [])


def test_dct_matrix_built_in_kernel_matches_reference():
    out = torch.empty(8, 8, dtype=torch.float32, device=DEVICE)
    _dct_probe[(1,)](out)
    torch.testing.assert_close(out.cpu(), dct_matrix(), rtol=0, atol=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, under the interpreter
@pytest.mark.parametrize("use_libdevice", LIBDEVICE)
def test_round_tie_equals_the_contract_for_every_sampled_float(use_libdevice):
    """R(u) of the kernels equals the contract's formula (gcln_fast.reference.round_tie in
    float32) bit for bit, on consecutive floats across every tie-window edge and half-integer."""
    from test_qnt_cpu import _dense_u

    u = _dense_u()
    r, _, _ = rounding(u, "identity", use_libdevice)
    want = round_tie(u)
    same = (r == want) | (r.isnan() & want.isnan())
    assert bool(same.all()), f"{int((~same).sum())} differ, e.g. u={u[~same][:4].tolist()}"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_surrogate_code_matches_the_formulas(surrogate):
    u = torch.cat([torch.linspace(-40, 40, 200_001), torch.arange(-20, 21) + 0.5])
    r, value, slope = rounding(u, surrogate, CUDA)
    u64 = u.double()
    assert torch.equal(r, round_tie(u))
    torch.testing.assert_close(value.double(), surrogate_value(u64, surrogate), atol=4e-6, rtol=1e-6)
    torch.testing.assert_close(slope.double(), surrogate_slope(u64, surrogate), atol=2e-6, rtol=1e-6)


# --------------------------------------------------------------------------- every form


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", FORMS_FWD)
def test_forward_every_form(variant, form):
    x = rand(SMALL[variant], seed=1)
    q = make_q(form, x.shape)
    y = qnt_triton.launch_qnt(x.to(DEVICE), table(q, x), 255.0, variant=variant)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_qnt_close(y, x, q)
    for surrogate in ["cubic", "sine"]:
        y = qnt_triton.launch_qnt(x.to(DEVICE), table(q, x), 255.0, surrogate, True, variant=variant)
        assert_qnt_close(y, x, q, surrogate=surrogate, soft_forward=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("form", FORMS_BWD)
def test_backward_every_form(variant, form):
    x, gy = rand(SMALL[variant], seed=2), randn(SMALL[variant], seed=3)
    q = make_q(form, x.shape)
    for surrogate in SURROGATES:
        need_x = surrogate != "identity"
        gx, gq = qnt_triton.launch_backward(
            gy.to(DEVICE), x.to(DEVICE), table(q, x), 255.0, surrogate, False, need_x, True, variant=variant
        )
        assert gq.shape == table(q, x).shape and (gx.shape == x.shape if need_x else gx.shape == (0,))
        assert_grads_close(gx if need_x else None, gq, x, gy, q, surrogate=surrogate)


@pytest.mark.parametrize("variant", [] if CUDA else ["dot", "butterfly"])  # separable: the backend fixture
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_and_channels_last(variant, dtype):
    x = rand(SMALL[variant], dtype, seed=4).to(DEVICE).contiguous(memory_format=torch.channels_last)
    gy = randn(SMALL[variant], dtype, seed=5).to(DEVICE)
    q = make_q("sample1", x.shape)
    y = qnt_triton.launch_qnt(x, table(q, x), 255.0, variant=variant)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert_qnt_close(y, x, q)
    gx, gq = qnt_triton.launch_backward(gy, x, table(q, x), 255.0, "cubic", False, True, True, variant=variant)
    assert gx.dtype == dtype and gx.stride() == y.stride()
    assert_grads_close(gx, gq, x, gy, q, surrogate="cubic")


@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_of_the_soft_forward_matches_finite_differences(variant):
    """Directional derivatives of <gy, qnt(x, q)> (soft sine forward: smooth), central
    differences of the float32 forward, against the fused backward: along the gradients
    themselves (the largest derivative: float32 round-off of the forward stays under 1e-3 of
    it) and along random directions (looser: there the derivative can be as small as 1e-5 and
    the forward's round-off a few percent of it)."""
    x, gy = rand(SMALL[variant], seed=6).to(DEVICE), randn(SMALL[variant], seed=7).to(DEVICE)
    q = table(make_q("sample", x.shape, seed=8), x)
    gx, gq = qnt_triton.launch_backward(gy, x, q, 255.0, "sine", True, True, True, variant=variant)

    def loss(xv, qv):
        y = qnt_triton.launch_qnt(xv, qv, 255.0, "sine", True, variant=variant)
        return float((y.double() * gy.double()).sum())

    u = qnt_coefficients(x.cpu(), 255.0) / q.cpu()[:, :, None, None]

    def check(dx, dq, rel_tol):
        # Steps that move any u = Z / q by at most 1e-2: the sine's curvature then costs < 1e-3.
        du_x = (qnt_coefficients(dx.cpu(), 255.0) / q.cpu()[:, :, None, None]).abs().max()
        du_q = (u * dq.cpu()[:, :, None, None]).abs().max()
        dx, dq = 1e-2 * dx / du_x.clamp(min=1e-30).item(), 1e-2 * dq / du_q.clamp(min=1e-30).item()
        numeric = (loss(x + dx, q * (1 + dq)) - loss(x - dx, q * (1 - dq))) / 2
        analytic = float((gx.double() * dx.double()).sum() + (gq.double() * q.double() * dq.double()).sum())
        assert math.isclose(numeric, analytic, rel_tol=rel_tol), (numeric, analytic)

    zero_x, zero_q = torch.zeros_like(x), torch.zeros_like(q)
    check(gx, zero_q, 2e-3)
    check(zero_x, gq * q, 2e-3)
    check(randn(x.shape, seed=9).to(DEVICE), zero_q, 5e-2)
    check(zero_x, randn(q.shape, seed=10).to(DEVICE), 5e-2)


def test_forms_agree():
    x = rand((2, 3, 11, 13), seed=11)
    q = table(make_q("sample", x.shape), x)
    ys = [qnt_triton.launch_qnt(x.to(DEVICE), q, 255.0, variant=v).cpu() for v in ("dot", "separable")]
    assert_qnt_close(ys[0], x, q.cpu())
    torch.testing.assert_close(ys[0], ys[1], atol=2e-6, rtol=0)


@pytest.mark.parametrize("variant", ["dot", "separable"])
def test_deterministic(variant):
    x, gy = rand((2, 3, 24, 40), seed=12).to(DEVICE), randn((2, 3, 24, 40), seed=13).to(DEVICE)
    for form in ["channel", "sample1"]:
        q = table(make_q(form, x.shape), x)
        runs = [qnt_triton.launch_backward(gy, x, q, 255.0, "cubic", False, True, True, variant=variant) for _ in "ab"]
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_per_sample_grad_q_uses_each_images_blocks_only():
    x, gy = rand((3, 2, 9, 9), seed=14).to(DEVICE), randn((3, 2, 9, 9), seed=15).to(DEVICE)
    gy[1] = 0  # image 1 gets no gradient: its table's grad_q must be exactly 0
    q = table(make_q("sample", x.shape), x)
    _, gq = qnt_triton.launch_backward(gy, x, q, 255.0, "cubic", False, False, True)
    assert not bool(gq[1].any()) and bool(gq[0].any()) and bool(gq[2].any())


# --------------------------------------------------------------------------- the generated source, the ops, errors


def test_butterfly_source_is_generated_once_and_complete():
    src = butterfly.generate_source()
    assert src.count("@triton.jit") == 2 and "def qnt_bwd_butterfly_kernel(" in src
    compile(src, "<generated>", "exec")  # valid Python
    assert butterfly.qnt_fwd_butterfly_kernel.fn.__name__ == "qnt_fwd_butterfly_kernel"


def test_module_exposes_the_ops():
    assert qnt_triton.qnt_triton._opoverload is torch.ops.gcln_fast.qnt_triton.default
    assert qnt_triton.qnt_backward_triton._opoverload is torch.ops.gcln_fast.qnt_backward_triton.default
    x = rand((1, 2, 9, 9)).to(DEVICE)
    q = torch.full((1, 1, 8, 8), 6.0, device=DEVICE)
    assert torch.equal(qnt_triton.qnt_triton(x, q, 255.0, "identity", False), qnt_triton.launch_qnt(x, q, 255.0))
    if "triton" in gcln_fast.available_backends(DEVICE):
        assert gcln_fast.ops._ops("triton") == (qnt_triton.qnt_triton, qnt_triton.qnt_backward_triton)


def test_errors_name_the_argument():
    x = rand((1, 3, 8, 8)).to(DEVICE)
    q = torch.ones(1, 1, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match="variant"):
        qnt_triton.launch_qnt(x, q, 255.0, variant="fft")
    with pytest.raises(ValueError, match="precision"):
        qnt_triton.launch_qnt(x, q, 255.0, variant="dot", precision="tf32")
    with pytest.raises(ValueError, match="surrogate"):
        qnt_triton.qnt_triton(x, q, 255.0, "relu", False)
    with pytest.raises(ValueError, match="q_table"):
        qnt_triton.qnt_triton(x, torch.ones(2, 8, 8, device=DEVICE), 255.0, "identity", False)
    with pytest.raises(ValueError, match="grad_y must have"):
        qnt_triton.qnt_backward_triton(x[:, :, :4], x, q, 255.0, "cubic", False, True, True)


@needs_cuda
def test_tf32x3_precision_option():
    x = rand((4, 3, 64, 64))
    q = make_q("freq", x.shape)
    y = qnt_triton.launch_qnt(x.to(DEVICE), table(q, x), 255.0, variant="dot", precision="tf32x3")
    assert_qnt_close(y, x, q)


def test_import_without_triton_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what `import triton` sees where it is not installed
    spec = importlib.util.spec_from_file_location("_qnt_triton_without_triton", qnt_triton.__file__)
    with pytest.raises(ImportError, match="needs Triton"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
