"""The fused CUDA kernels (csrc/cuda/qnt_cuda.cu) against the reference.

Ground truth is :func:`gcln_fast.reference.qnt_reference` evaluated on the CPU
in float32 (so no TF32 or GPU matmul setting can move it); the comparison
allows the rounding-boundary flips the contract permits (``helpers.assert_qnt_close``).
Everything here is skipped, with the reason, where there is no GPU or the
extension was built without its CUDA kernels.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gcln_fast
from gcln_fast.reference import dct_matrix, qnt_reference

from helpers import assert_qnt_close, check_compile_fullgraph, make_q, rand, randn


def _skip_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if "cuda" not in gcln_fast.available_backends("cuda"):
        return "the extension has no CUDA kernel for gcln_fast::qnt (built without nvcc, or failed to load)"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

DEV = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Odd sizes (partial edge blocks in one or both directions, planes smaller than
# a block, widths that are not a multiple of the 4 blocks a warp covers), a
# per-channel table beyond the 4 held in shared memory (C = 7), and batches
# large enough to use many CTAs.
SHAPES = [
    (1, 1, 1, 1),
    (2, 3, 7, 9),
    (1, 2, 33, 65),
    (3, 3, 32, 32),
    (2, 1, 15, 1),
    (1, 3, 8, 8),
    (2, 7, 17, 23),
    (96, 3, 16, 24),
    (64, 3, 64, 64),
    (2, 3, 250, 262),
]



def on_dev(q):
    return q.to(DEV) if isinstance(q, torch.Tensor) else q




def check_forward(x_cpu, q_cpu, scale=255.0, *, x_dev=None):
    """Run the CUDA kernel on x (or on the given device view of it) and compare with the CPU reference."""
    x = x_cpu.to(DEV) if x_dev is None else x_dev
    y = gcln_fast.qnt(x, on_dev(q_cpu), scale=scale, backend="cuda")
    assert y.device == x.device and y.dtype == x.dtype and y.shape == x.shape
    assert_qnt_close(y.cpu(), qnt_reference(x_cpu, q_cpu, scale), x_cpu, q_cpu, scale)
    return y


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", ["scalar", "tensor0d", "freq", "channel"])
def test_forward_matches_reference(shape, dtype, form):
    check_forward(rand(shape, dtype), make_q(form, shape[1]))


@pytest.mark.parametrize("scale", [1.0, 255.0, 1000.0])
def test_scale(scale):
    check_forward(rand((2, 2, 11, 19)), 3.0, scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", ["scalar", "channel"])
def test_channels_last_in_channels_last_out(dtype, form):
    x_cpu = rand((2, 3, 20, 27), dtype)
    x = x_cpu.to(DEV).contiguous(memory_format=torch.channels_last)
    y = check_forward(x_cpu, make_q(form, 3), x_dev=x)
    assert y.is_contiguous(memory_format=torch.channels_last)


VIEWS = {
    "strided": lambda t: t[:, :, ::2, 1::3],
    "transposed": lambda t: t.transpose(2, 3),
    "channel-slice": lambda t: t[:, 1:],
    "expanded": lambda t: t[:1].expand(3, -1, -1, -1),
    # Data pointer 4 bytes past an allocation: no 16-byte alignment anywhere.
    "misaligned": lambda t: t.flatten()[1 : 1 + 3 * 4 * 40 * 40].view(3, 4, 40, 40)[..., :37],
    "channels-last-slice": lambda t: t.contiguous(memory_format=torch.channels_last)[:, :, 3:, 5:],
}


@pytest.mark.parametrize("view", list(VIEWS), ids=list(VIEWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_non_contiguous_inputs(view, dtype):
    base = rand((3, 4, 41, 40), dtype)
    x_cpu = VIEWS[view](base)
    x = VIEWS[view](base.to(DEV))
    assert x.shape == x_cpu.shape
    check_forward(x_cpu.contiguous(), make_q("channel", x.shape[1]), x_dev=x)


def test_runs_on_the_current_stream():
    x_cpu = rand((4, 3, 40, 48))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = x_cpu.to(DEV)
        y = gcln_fast.qnt(x, 10.0, backend="cuda")
    stream.synchronize()
    assert_qnt_close(y.cpu(), qnt_reference(x_cpu, 10.0), x_cpu, 10.0)


def test_empty_tensors():
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5), (2, 0, 4, 4), (1, 1, 7, 0)]:
        x = torch.empty(shape, device=DEV)
        y = gcln_fast.qnt(x, 10.0, backend="cuda")
        assert y.shape == x.shape and y.device == x.device
        q = torch.full((1, 8, 8), 4.0, device=DEV)
        gq = torch.ops.gcln_fast.qnt_grad_q(torch.empty(shape, device=DEV), x, q, 255.0)
        assert gq.shape == (1, 8, 8) and not bool(gq.any())


def test_nan_and_inf_stay_in_their_block():
    x = rand((1, 1, 16, 16)).to(DEV)
    x[0, 0, 2, 3] = float("nan")
    x[0, 0, 12, 12] = float("inf")
    y = gcln_fast.qnt(x, 10.0, backend="cuda")
    assert torch.isnan(y[0, 0, :8, :8]).any()
    assert not torch.isfinite(y[0, 0, 8:, 8:]).all()
    assert torch.isfinite(y[0, 0, :8, 8:]).all() and torch.isfinite(y[0, 0, 8:, :8]).all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    h=st.integers(1, 40),
    w=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES),
    form=st.sampled_from(["scalar", "freq", "channel"]),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_parity_on_random_shapes(n, c, h, w, dtype, form, channels_last, seed):
    x_cpu = rand((n, c, h, w), dtype, seed)
    x = x_cpu.to(DEV)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    check_forward(x_cpu, make_q(form, c, seed), x_dev=x)


# ----------------------------------------------------------------------------- backward


def test_grad_x_is_grad_y_without_a_copy():
    x = rand((2, 3, 9, 14)).to(DEV).requires_grad_()
    gy = randn((2, 3, 9, 14)).to(DEV)
    (gx,) = torch.autograd.grad(gcln_fast.qnt(x, 10.0, backend="cuda"), x, gy)
    assert gx.data_ptr() == gy.data_ptr()


def reference_grad_q(x_cpu, gy_cpu, q_cpu, scale=255.0):
    q_ref = q_cpu.detach().clone().requires_grad_()
    qnt_reference(x_cpu, q_ref, scale).backward(gy_cpu)
    return q_ref.grad


def cuda_grad_q(x, gy, q_cpu, scale=255.0):
    q = q_cpu.detach().to(DEV, copy=True).requires_grad_()
    gcln_fast.qnt(x, q, scale=scale, backend="cuda").backward(gy)
    assert q.grad.shape == q_cpu.shape
    return q.grad.cpu()


def grad_q_tolerance(x_cpu, gy_cpu, q_cpu, scale, rel):
    """Per-entry tolerance of grad_q: ``rel`` of the sum of |terms|, plus every
    term whose coefficient sits within float32 round-off of a rounding boundary
    (the contract lets such a coefficient land on either level, which moves the
    term G * (round(t) - t) by a whole |G| / scale)."""
    x, gy = x_cpu.float(), gy_cpu.float()
    h, w = x.shape[-2:]
    d = dct_matrix()
    pad = (0, (-w) % 8, 0, (-h) % 8)

    def blocks(u, mode):
        u = F.pad(u, pad, mode=mode) if any(pad) else u
        n, c, hp, wp = u.shape
        return u.reshape(n, c, hp // 8, 8, wp // 8, 8).transpose(3, 4)

    z = d @ blocks(x * scale, "replicate") @ d.T
    g = d @ blocks(gy, "constant") @ d.T
    q = q_cpu.float().reshape((1, -1, 1, 1, 8, 8) if q_cpu.dim() == 3 else (1, 1, 1, 1, *q_cpu.shape[-2:]))
    t = z / q
    dist = ((t - t.floor()) - 0.5).abs()
    zmax = z.abs().amax(dim=(-2, -1), keepdim=True)
    near = (dist < 1e-6 * t.abs() + 1e-6) | (dist * q < 2e-6 * zmax)
    terms = g.abs() / scale
    tol = rel * 0.5 * terms + near * terms
    tol = tol.sum(dim=(0, 2, 3)) if q_cpu.dim() == 3 else tol.sum(dim=(0, 1, 2, 3))
    return tol.sum() if q_cpu.dim() == 0 else tol.reshape(q_cpu.shape)


def assert_grad_q_close(got, x_cpu, gy_cpu, q_cpu, scale=255.0, rel=1e-4):
    ref = reference_grad_q(x_cpu, gy_cpu, q_cpu, scale)
    assert got.shape == ref.shape
    tol = grad_q_tolerance(x_cpu, gy_cpu, q_cpu, scale, rel) + 1e-7
    err = (got - ref).abs()
    worst = int((err - tol).argmax())
    assert bool((err <= tol).all()), (
        f"grad_q differs from autograd through the reference: {int((err > tol).sum())}/{err.numel()} entries; "
        f"worst flat index {worst}: got {got.flatten()[worst]:.7g}, want {ref.flatten()[worst]:.7g}, "
        f"tolerance {tol.flatten()[worst]:.3g}"
    )


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 9, 14), (1, 2, 33, 65), (4, 3, 32, 32), (2, 7, 17, 23), (32, 3, 64, 72)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("form", ["tensor0d", "freq", "channel"])
def test_grad_q_matches_autograd_through_reference(shape, form):
    x_cpu, gy_cpu = rand(shape), randn(shape, seed=5)
    q_cpu = make_q(form, shape[1])
    assert_grad_q_close(cuda_grad_q(x_cpu.to(DEV), gy_cpu.to(DEV), q_cpu), x_cpu, gy_cpu, q_cpu)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_grad_q_scale(scale):
    x_cpu, gy_cpu = rand((2, 3, 20, 21)), randn((2, 3, 20, 21), seed=3)
    q_cpu = make_q("freq", 3) / 10
    got = cuda_grad_q(x_cpu.to(DEV), gy_cpu.to(DEV), q_cpu, scale)
    assert_grad_q_close(got, x_cpu, gy_cpu, q_cpu, scale)


@pytest.mark.parametrize("form", ["freq", "channel"])
def test_grad_q_channels_last_and_strided(form):
    x_cpu, gy_cpu = rand((3, 3, 30, 44)), randn((3, 3, 30, 44), seed=8)
    q_cpu = make_q(form, 3)
    x = x_cpu.to(DEV).contiguous(memory_format=torch.channels_last)
    gy = randn((3, 3, 60, 44), seed=8)[:, :, ::2].to(DEV)  # a different, non-contiguous layout
    gy_cpu = gy.cpu().contiguous()
    assert_grad_q_close(cuda_grad_q(x, gy, q_cpu), x_cpu, gy_cpu, q_cpu)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_grad_q_low_precision_inputs(dtype):
    x_cpu = rand((2, 3, 16, 24), dtype)
    gy_cpu = randn((2, 3, 16, 24), dtype, seed=6)
    q_cpu = torch.full((8, 8), 7.0)
    assert_grad_q_close(cuda_grad_q(x_cpu.to(DEV), gy_cpu.to(DEV), q_cpu), x_cpu, gy_cpu, q_cpu)


def test_grad_q_accepts_grad_y_of_another_dtype():
    x = rand((2, 3, 16, 24), torch.float16).to(DEV)
    gy = randn((2, 3, 16, 24), seed=2).to(DEV)
    q = torch.full((3, 8, 8), 5.0, device=DEV)
    got = torch.ops.gcln_fast.qnt_grad_q(gy, x, q, 255.0)
    want = torch.ops.gcln_fast.qnt_grad_q(gy.half(), x, q, 255.0)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("cq", [1, 3])
def test_grad_q_is_deterministic(cq):
    x = rand((16, 3, 128, 136)).to(DEV)
    gy = randn((16, 3, 128, 136), seed=7).to(DEV)
    q = torch.full((cq, 8, 8), 5.0, device=DEV)
    outs = [torch.ops.gcln_fast.qnt_grad_q(gy, x, q, 255.0) for _ in range(3)]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


def test_q_function_backward_equals_registered_op_backward():
    x = rand((2, 3, 9, 9)).to(DEV).requires_grad_()
    q = torch.full((1, 8, 8), 6.0, device=DEV, requires_grad=True)
    gy = randn((2, 3, 9, 9)).to(DEV)
    gcln_fast.QNTFunction.apply(x, q, 255.0, "cuda").backward(gy)
    gq_fn, gx_fn = q.grad.clone(), x.grad.clone()
    q.grad = x.grad = None
    torch.ops.gcln_fast.qnt(x, q, 255.0).backward(gy)
    assert torch.equal(q.grad, gq_fn) and torch.equal(x.grad, gx_fn)


# ----------------------------------------------------------------------------- registration


@pytest.mark.parametrize("q_requires_grad", [False, True])
@pytest.mark.parametrize("shape,cq", [((2, 3, 9, 14), 1), ((1, 2, 16, 8), 2), ((2, 5, 8, 12), 5)])
def test_opcheck(shape, cq, q_requires_grad):
    x = rand(shape).to(DEV).requires_grad_()
    q_table = torch.full((cq, 8, 8), 9.0, device=DEV, requires_grad=q_requires_grad)
    torch.library.opcheck(torch.ops.gcln_fast.qnt.default, (x, q_table, 255.0))
    torch.library.opcheck(
        torch.ops.gcln_fast.qnt_grad_q.default, (randn(shape).to(DEV), x.detach(), q_table.detach(), 255.0)
    )


def test_direct_op_calls_are_checked():
    x = rand((1, 3, 8, 8)).to(DEV)
    with pytest.raises(ValueError, match="q must have shape"):
        torch.ops.gcln_fast.qnt(x, torch.ones(2, 8, 8, device=DEV), 255.0)
    with pytest.raises(ValueError, match="q is on"):
        torch.ops.gcln_fast.qnt(x, torch.ones(1, 8, 8), 255.0)
    with pytest.raises(TypeError, match="float32"):
        torch.ops.gcln_fast.qnt(x, torch.ones(1, 8, 8, dtype=torch.float64, device=DEV), 255.0)
    with pytest.raises(ValueError, match="x must have shape"):
        torch.ops.gcln_fast.qnt(x[0], torch.ones(1, 8, 8, device=DEV), 255.0)
    with pytest.raises(ValueError, match="grad_y must have"):
        torch.ops.gcln_fast.qnt_grad_q(x[:, :, :4], x, torch.ones(1, 8, 8, device=DEV), 255.0)


@pytest.mark.parametrize("trainable", [False, True])
def test_torch_compile_fullgraph_matches_eager(trainable):
    check_compile_fullgraph(DEV, "cuda", trainable)
