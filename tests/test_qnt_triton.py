"""The Triton kernels (``kernels/qnt_triton.py``) against the reference.

Without a GPU the kernels run under the Triton interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by conftest.py before triton is imported): small
shapes only. With a GPU they run compiled on CUDA tensors, and the CUDA-only
tests add ``torch.library.opcheck``, ``torch.compile(fullgraph=True)`` and
larger shapes.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import gcln_fast  # noqa: E402
from gcln_fast import ops  # noqa: E402
from gcln_fast.kernels import qnt_triton as qt  # noqa: E402  (the installed package's module: must import)
from gcln_fast.reference import BLOCK, dct_matrix, qnt_coefficients, qnt_reference  # noqa: E402

from helpers import assert_qnt_close  # noqa: E402

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if CUDA:
    DEVICE = "cuda"
elif INTERPRET:
    DEVICE = "cpu"
else:
    pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (compiled Triton)")
api_triton = pytest.mark.skipif(
    "triton" not in gcln_fast.available_backends(DEVICE),
    reason=f"gcln_fast.ops does not offer backend 'triton' here: {ops.TRITON_ERROR}",
)

VARIANTS = list(qt.VARIANTS)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Odd sizes: partial edge blocks in both directions; the last one spans several tiles.
SHAPES = [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 17, 33), (2, 3, 40, 72)]
if CUDA:
    SHAPES += [(8, 3, 224, 224), (64, 3, 33, 31)]
QFORMS = ["scalar", "freq", "channel"]
# Dtypes paired with q forms (the interpreter is slow, and on CUDA every dtype and
# q form is another compile of each variant); every combination for the variant
# the ops use, on CUDA.
_PAIRS = [(torch.float32, "channel"), (torch.float16, "freq"), (torch.bfloat16, "scalar")]
FWD_CASES = [(v, d, f) for v in VARIANTS for d, f in _PAIRS]
GRAD_CASES = [(v, d, f) for v in VARIANTS for d, f in _PAIRS[:2]]
if CUDA:
    FWD_CASES += [(qt.DEFAULT_VARIANT, d, f) for d in DTYPES for f in QFORMS if (d, f) not in _PAIRS]
    GRAD_CASES += [(qt.DEFAULT_VARIANT, d, f) for d in DTYPES[:2] for f in QFORMS[1:] if (d, f) not in _PAIRS[:2]]


def rand(shape, dtype=torch.float32, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(dtype).to(device)


def make_q(form, channels, seed=1, device=DEVICE):
    """(q in the user's form, canonical float32 (Cq, 8, 8) table)."""
    g = torch.Generator().manual_seed(seed)
    if form == "scalar":
        q = torch.tensor(7.0)
        table = q.expand(1, 8, 8)
    elif form == "freq":
        q = torch.rand(8, 8, generator=g) * 30 + 2
        table = q.unsqueeze(0)
    else:
        q = torch.rand(channels, 8, 8, generator=g) * 30 + 2
        table = q
    return q.to(device), table.contiguous().to(device)


# --------------------------------------------------------------------------- reference gradient and its tolerance


def _blocks(u, mode):
    h, w = u.shape[-2:]
    u = torch.nn.functional.pad(u, (0, (-w) % BLOCK, 0, (-h) % BLOCK), mode=mode)
    n, c, hp, wp = u.shape
    return u.reshape(n, c, hp // BLOCK, BLOCK, wp // BLOCK, BLOCK).transpose(3, 4)


def reference_grad_q(grad_y, x, q, scale=255.0):
    """grad_q by autograd through qnt_reference, q given as (8, 8) (shared) or (C, 8, 8)."""
    q = q.detach().clone().requires_grad_(True)
    y = qnt_reference(x, q, scale)
    y.backward(grad_y.to(y.dtype))
    return q.grad


def grad_q_tolerance(grad_y, x, q, scale=255.0):
    """Bound on |grad_q(kernel) - grad_q(reference)| from float32 round-off.

    Per block and frequency, ``G * (round(t) - t)`` with ``t = Z / q`` differs by
    ``|G| * dt`` (``dt`` the round-off of ``t``, about 16 eps * ||U|| / q) plus a
    relative round-off of G; a coefficient within round-off of a rounding
    boundary may flip (``round(t)`` moves by 1), worth ``|G|`` in that block.
    """
    d = dct_matrix(x.device)
    g = d @ _blocks(grad_y.float(), "constant") @ d.T
    u = _blocks(x.float() * scale, "replicate")
    qb = q.float().reshape(1, -1, 1, 1, 8, 8)
    t = qnt_coefficients(x, scale) / qb
    dt = 2e-6 * u.square().sum((-1, -2), keepdim=True).sqrt() / qb + 1e-6 * t.abs()
    near = ((t - t.floor()) - 0.5).abs() < dt
    per_block = g.abs() * (dt + 1e-6 + near.float())
    dims = (0, 2, 3) if q.dim() == 3 else (0, 1, 2, 3)
    return per_block.sum(dims) / scale + 1e-7


def assert_grad_q_close(gq, grad_y, x, q_user, scale=255.0):
    ref = reference_grad_q(grad_y, x, q_user, scale)
    gq = gq.reshape(ref.shape)
    tol = grad_q_tolerance(grad_y, x, q_user if q_user.dim() else q_user.expand(8, 8), scale)
    if q_user.dim() == 0:
        tol = tol.sum()
    err = (gq - ref).abs()
    assert bool((err <= tol).all()), f"grad_q max err {err.max():.3g}, worst err/tol {(err / tol).max():.3g}"


# --------------------------------------------------------------------------- building blocks


@triton.jit
def _dct_probe(out_ptr):
    k = tl.arange(0, 8)[:, None]
    n = tl.arange(0, 8)[None, :]
    tl.store(out_ptr + k * 8 + n, qt._dct_entry(k, n))


@triton.jit
def _rint_probe(x_ptr, y_ptr, N, USE_LIBDEVICE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    x = tl.load(x_ptr + offs, mask=offs < N)
    tl.store(y_ptr + offs, qt._rint(x, USE_LIBDEVICE), mask=offs < N)


def test_dct_matrix_built_in_kernel_matches_reference():
    out = torch.empty(8, 8, dtype=torch.float32, device=DEVICE)
    _dct_probe[(1,)](out)
    torch.testing.assert_close(out, dct_matrix(DEVICE), rtol=0, atol=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, under the interpreter
@pytest.mark.parametrize("use_libdevice", [False] + ([True] if CUDA else []))
def test_rint_is_round_half_to_even(use_libdevice):
    special = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 4194304.5, 8388607.5, -8388607.5,
               2.0**23, 2.0**24 + 2, 3.0e38, -0.0, 0.0, 1e-30, float("inf"), float("-inf")]  # fmt: skip
    x = torch.cat([torch.tensor(special), torch.randn(1000) * 50, torch.arange(-20, 20) + 0.5]).to(DEVICE)
    y = torch.empty_like(x)
    _rint_probe[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), USE_LIBDEVICE=use_libdevice, BLOCK_SIZE=256)
    torch.testing.assert_close(y, torch.round(x), rtol=0, atol=0)
    nan = torch.tensor([float("nan")] * 4, device=DEVICE)
    out = torch.empty_like(nan)
    _rint_probe[(1,)](nan, out, 4, USE_LIBDEVICE=use_libdevice, BLOCK_SIZE=4)
    assert bool(torch.isnan(out).all())


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("variant,dtype,qform", FWD_CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(shape, dtype, qform, variant):
    x = rand(shape, dtype)
    q, table = make_q(qform, shape[1])
    y = qt.launch_qnt(x, table, 255.0, variant=variant)
    assert y.dtype == dtype and y.shape == x.shape
    assert_qnt_close(y, x, q)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qform", QFORMS)
def test_forward_every_q_form(qform, variant):
    x = rand((2, 3, 7, 9))
    q, table = make_q(qform, 3)
    assert_qnt_close(qt.launch_qnt(x, table, 255.0, variant=variant), x, q)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "layout",
    ["channels_last", "slice", "transpose", "expand", "narrow_channels"],
)
def test_forward_memory_layouts(layout, variant):
    base = rand((2, 3, 20, 27))
    x = {
        "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
        "slice": lambda t: t[:, :, ::2, 1::3],
        "transpose": lambda t: t.transpose(2, 3),
        "expand": lambda t: t[:1].expand(3, -1, -1, -1),
        "narrow_channels": lambda t: t[:, 1:],
    }[layout](base)
    q, table = make_q("channel", x.shape[1])
    y = qt.launch_qnt(x, table, 255.0, variant=variant)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.stride() == torch.empty_like(x).stride()
    assert_qnt_close(y, x, q)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_scale(scale):
    x = rand((2, 2, 11, 19))
    q, table = make_q("freq", 2)
    q = q / 50 if scale == 1.0 else q
    table = table / 50 if scale == 1.0 else table
    assert_qnt_close(qt.launch_qnt(x, table, scale), x, q, scale)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, under the interpreter
@pytest.mark.parametrize("variant", VARIANTS)
def test_nan_and_inf_stay_in_their_block(variant):
    x = rand((1, 2, 20, 20))
    x[0, 0, 3, 4] = float("nan")  # block (0, 0) of channel 0
    x[0, 1, 17, 18] = float("inf")  # block (2, 2) of channel 1 (a partial edge block)
    y = qt.launch_qnt(x, torch.full((1, 8, 8), 10.0, device=DEVICE), 255.0, variant=variant)
    bad = ~torch.isfinite(y)
    assert bool(bad[0, 0, :8, :8].all()) and bool(bad[0, 1, 16:, 16:].all())
    bad[0, 0, :8, :8] = False
    bad[0, 1, 16:, 16:] = False
    assert not bool(bad.any())
    # The blocks away from the NaN/Inf are what the reference makes of this same input.
    y_ref = qnt_reference(x, 10.0)
    assert torch.equal(torch.isfinite(y), torch.isfinite(y_ref))
    finite = torch.isfinite(y_ref)
    torch.testing.assert_close(y[finite], y_ref[finite], atol=2e-6, rtol=0)


def test_empty_tensors():
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5)]:
        x = rand(shape)
        assert qt.launch_qnt(x, torch.full((1, 8, 8), 5.0, device=DEVICE), 255.0).shape == shape
        gq = qt.launch_grad_q(x, x, torch.full((3, 8, 8), 5.0, device=DEVICE), 255.0)
        assert gq.shape == (3, 8, 8) and not bool(gq.any())


# --------------------------------------------------------------------------- grad_q


@pytest.mark.parametrize("variant,dtype,qform", GRAD_CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_grad_q_matches_autograd(shape, dtype, qform, variant):
    x = rand(shape, dtype)
    gy = (rand(shape, seed=5) - 0.5).to(dtype)
    q, table = make_q(qform, shape[1])
    gq = qt.launch_grad_q(gy, x, table, 255.0, variant=variant)
    assert gq.dtype == torch.float32 and gq.shape == table.shape
    assert_grad_q_close(gq, gy, x, q)


@pytest.mark.parametrize("variant", VARIANTS if CUDA else ["separable", "butterfly"])  # dot: separable's code
@pytest.mark.parametrize("layout", ["expanded_grad", "channels_last"])
def test_grad_q_strided_inputs(layout, variant):
    x = rand((1, 3, 13, 21))
    gy = rand((1, 3, 13, 21), seed=3) - 0.5
    if layout == "expanded_grad":  # what the backward of .sum() hands over: stride 0 everywhere
        gy = torch.ones((), device=DEVICE).expand(1, 3, 13, 21)
    else:
        x = x.contiguous(memory_format=torch.channels_last)
        gy = gy.contiguous(memory_format=torch.channels_last)
    q, table = make_q("channel", 3)
    assert_grad_q_close(qt.launch_grad_q(gy, x, table, 255.0, variant=variant), gy, x, q)


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic(variant):
    shape = (4, 3, 96, 80) if CUDA else (2, 3, 40, 72) if variant != "butterfly" else (1, 2, 9, 17)
    x = rand(shape)
    gy = rand(shape, seed=9) - 0.5
    for qform in ["freq", "channel"]:
        _, table = make_q(qform, shape[1])
        y1 = qt.launch_qnt(x, table, 255.0, variant=variant)
        y2 = qt.launch_qnt(x, table, 255.0, variant=variant)
        assert torch.equal(y1, y2)
        g1 = qt.launch_grad_q(gy, x, table, 255.0, variant=variant)
        g2 = qt.launch_grad_q(gy, x, table, 255.0, variant=variant)
        assert torch.equal(g1, g2)


def test_variants_agree():
    x = rand((2, 3, 40, 72))
    _, table = make_q("channel", 3)
    y = [qt.launch_qnt(x, table, 255.0, variant=v) for v in VARIANTS]
    for other in y[1:]:
        assert_qnt_close(other, x, table)


def test_bad_variant():
    x = rand((1, 1, 8, 8))
    with pytest.raises(ValueError, match="variant"):
        qt.launch_qnt(x, torch.ones(1, 8, 8, device=DEVICE), 255.0, variant="fft")


# --------------------------------------------------------------------------- the ops and the public API


def test_module_exposes_the_ops():
    assert qt.qnt_triton._opoverload is torch.ops.gcln_fast.qnt_triton.default
    assert qt.qnt_grad_q_triton._opoverload is torch.ops.gcln_fast.qnt_grad_q_triton.default
    x = rand((1, 2, 9, 9))
    table = torch.full((1, 8, 8), 6.0, device=DEVICE)
    assert torch.equal(qt.qnt_triton(x, table, 255.0), qt.launch_qnt(x, table, 255.0))
    assert torch.equal(qt.qnt_grad_q_triton(x, x, table, 255.0), qt.launch_grad_q(x, x, table, 255.0))


@api_triton
@pytest.mark.parametrize("qform", ["scalar", "freq", "channel"])
def test_public_api_forward_and_gradients(qform):
    x = rand((2, 3, 13, 18))
    q, _ = make_q(qform, 3)
    gy = rand(x.shape, seed=4) - 0.5
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    qs = [q.clone().requires_grad_(True) for _ in range(2)]
    y_t = gcln_fast.qnt(xs[0], qs[0], backend="triton")
    y_r = gcln_fast.qnt(xs[1], qs[1], backend="reference")
    assert_qnt_close(y_t.detach(), x, q)
    y_t.backward(gy)
    y_r.backward(gy)
    assert torch.equal(xs[0].grad, gy)  # straight-through
    assert qs[0].grad.shape == q.shape
    assert_grad_q_close(qs[0].grad, gy, x, q)


@api_triton
@pytest.mark.parametrize("kind", ["scalar", "per_frequency", "channels"])
def test_layer_trainable_backward(kind):
    kwargs = {"scalar": {}, "per_frequency": {"per_frequency": True}, "channels": {"channels": 3}}[kind]
    layers = [
        gcln_fast.QuantizedDCT(9.0, trainable=True, backend=b, **kwargs).to(DEVICE) for b in ("triton", "reference")
    ]
    x = rand((2, 3, 12, 20))
    gy = rand(x.shape, seed=7) - 0.5
    outs = [layer(x) for layer in layers]
    assert_qnt_close(outs[0].detach(), x, 9.0)
    for out in outs:
        out.backward(gy)
    grads = [next(layer.parameters()).grad for layer in layers]
    assert grads[0] is not None and grads[0].shape == grads[1].shape
    q = layers[1].q.detach()
    assert_grad_q_close(grads[0], gy, x, q)


# --------------------------------------------------------------------------- CUDA only (compiled Triton)


@needs_cuda
@api_triton
@pytest.mark.parametrize("qform", ["freq", "channel"])
def test_opcheck(qform):
    assert ops._ops("triton")[0] is qt.qnt_triton
    x = rand((2, 3, 13, 18))
    _, table = make_q(qform, 3)
    gy = rand(x.shape, seed=2)
    torch.library.opcheck(qt.qnt_triton, (x, table, 255.0))
    torch.library.opcheck(qt.qnt_grad_q_triton, (gy, x, table, 255.0))
    torch.library.opcheck(qt.qnt_triton, (x.half().contiguous(memory_format=torch.channels_last), table, 255.0))


@needs_cuda
@api_triton
def test_compile_fullgraph_matches_eager():
    x = rand((4, 3, 35, 41))
    _, table = make_q("channel", 3)

    def f(x, table):
        return qt.qnt_triton(x * 1.0, table, 255.0).relu()

    # not bitwise: the compiled graph may autotune to another tiling (summation order within a block)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, table), f(x, table), atol=1e-5, rtol=0)

    layer = gcln_fast.QuantizedDCT(9.0, channels=3, trainable=True, backend="triton").to(DEVICE)
    compiled = torch.compile(layer, fullgraph=True)
    gy = rand(x.shape, seed=3)
    compiled(x).backward(gy)
    g_compiled = next(layer.parameters()).grad.clone()
    layer.zero_grad()
    eager = layer(x)
    eager.backward(gy)
    torch.testing.assert_close(g_compiled, next(layer.parameters()).grad, rtol=1e-3, atol=1e-6)


@needs_cuda
def test_tf32x3_precision_option():
    x = rand((4, 3, 64, 64))
    _, table = make_q("freq", 3)
    y = qt.launch_qnt(x, table, 255.0, variant="dot", precision="tf32x3")
    assert_qnt_close(y, x, table[0])


def test_import_without_triton_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what `import triton` sees where it is not installed
    spec = importlib.util.spec_from_file_location("_qnt_triton_without_triton", qt.__file__)
    with pytest.raises(ImportError, match="needs Triton"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
