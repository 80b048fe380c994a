"""The fused C++ CPU kernel against the reference, the op registration, and the API's errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gcln_fast
from gcln_fast.reference import qnt_reference

from helpers import assert_qnt_close, check_compile_fullgraph, make_q, rand

pytestmark = pytest.mark.skipif("cpu" not in gcln_fast.available_backends("cpu"), reason="C++ extension not built")

SHAPES = [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 33, 65), (3, 3, 32, 32), (2, 1, 15, 1), (1, 3, 8, 8), (96, 3, 16, 24)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]




@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["scalar", "tensor0d", "freq", "channel"])
def test_forward_matches_reference(shape, dtype, form):
    x = rand(shape, dtype)
    q = make_q(form, shape[1])
    y = gcln_fast.qnt(x, q, backend="cpu")
    assert y.dtype == dtype and y.shape == x.shape
    assert_qnt_close(y, qnt_reference(x, q), x, q)


@pytest.mark.parametrize("scale", [1.0, 255.0, 1000.0])
def test_scale(scale):
    x = rand((2, 2, 11, 19))
    assert_qnt_close(gcln_fast.qnt(x, 3.0, scale=scale, backend="cpu"), qnt_reference(x, 3.0, scale), x, 3.0, scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_in_channels_last_out(dtype):
    x = rand((2, 3, 20, 27), dtype).contiguous(memory_format=torch.channels_last)
    y = gcln_fast.qnt(x, 10.0, backend="cpu")
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_qnt_close(y, qnt_reference(x, 10.0), x, 10.0)


@pytest.mark.parametrize(
    "view",
    [lambda t: t[:, :, ::2, 1::3], lambda t: t.transpose(2, 3), lambda t: t[:, 1:], lambda t: t.expand(3, -1, -1, -1)],
    ids=["strided", "transposed", "channel-slice", "expanded"],
)
def test_non_contiguous_inputs(view):
    x = view(rand((1, 4, 40, 36)))
    q = make_q("channel", x.shape[1])
    assert_qnt_close(gcln_fast.qnt(x, q, backend="cpu"), qnt_reference(x, q), x, q)


def test_grad_x_is_grad_y_without_a_copy():
    x = rand((2, 3, 9, 14)).requires_grad_()
    gy = torch.randn(2, 3, 9, 14)
    (gx,) = torch.autograd.grad(gcln_fast.qnt(x, 10.0, backend="cpu"), x, gy)
    assert gx.data_ptr() == gy.data_ptr()
    torch.testing.assert_close(gx, gy, atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 9, 14), (1, 2, 33, 65), (4, 3, 32, 32)])
@pytest.mark.parametrize("form", ["tensor0d", "freq", "channel"])
def test_grad_q_matches_autograd_through_reference(shape, form):
    x = rand(shape)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    q = make_q(form, shape[1])
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    gcln_fast.qnt(x, q1, backend="cpu").backward(gy)
    qnt_reference(x, q2).backward(gy)
    assert q1.grad.shape == q.shape
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-4 * q2.grad.abs().max().item() + 1e-7, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_grad_q_low_precision_inputs(dtype):
    x = rand((2, 3, 16, 24), dtype)
    gy = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(6)).to(dtype)
    q1, q2 = torch.full((8, 8), 7.0, requires_grad=True), torch.full((8, 8), 7.0, requires_grad=True)
    gcln_fast.qnt(x, q1, backend="cpu").backward(gy)
    qnt_reference(x, q2).backward(gy)
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-3 * q2.grad.abs().max().item(), rtol=1e-2)


def test_grad_q_is_deterministic_across_thread_counts():
    x, gy = rand((8, 3, 40, 56)), torch.randn(8, 3, 40, 56, generator=torch.Generator().manual_seed(7))
    q = torch.full((3, 8, 8), 5.0)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            outs.append(torch.ops.gcln_fast.qnt_grad_q(gy, x, q, 255.0))
    finally:
        torch.set_num_threads(threads)
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


@pytest.mark.parametrize("q_requires_grad", [False, True])
@pytest.mark.parametrize("shape,cq", [((2, 3, 9, 14), 1), ((1, 2, 16, 8), 2)])
def test_opcheck(shape, cq, q_requires_grad):
    x = rand(shape).requires_grad_()
    q = torch.full((cq, 8, 8), 9.0, requires_grad=q_requires_grad)
    torch.library.opcheck(torch.ops.gcln_fast.qnt.default, (x, q, 255.0))
    torch.library.opcheck(torch.ops.gcln_fast.qnt_grad_q.default, (torch.randn(shape), x.detach(), q.detach(), 255.0))


@pytest.mark.parametrize("trainable", [False, True])
def test_torch_compile_fullgraph_matches_eager(trainable):
    check_compile_fullgraph('cpu', "cpu", trainable)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    form=st.sampled_from(["scalar", "freq", "channel"]),
    seed=st.integers(0, 2**16),
)
def test_property_parity_on_random_shapes(n, c, h, w, dtype, form, seed):
    x = rand((n, c, h, w), dtype, seed)
    q = make_q(form, c, seed)
    assert_qnt_close(gcln_fast.qnt(x, q, backend="cpu"), qnt_reference(x, q), x, q)


def test_empty_tensors():
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5), (2, 0, 4, 4)]:
        x = torch.empty(shape)
        y = gcln_fast.qnt(x, 10.0, backend="cpu")
        assert y.shape == x.shape


def test_nan_and_inf_stay_in_their_block():
    x = rand((1, 1, 16, 16))
    x[0, 0, 2, 3] = float("nan")
    x[0, 0, 12, 12] = float("inf")
    y = gcln_fast.qnt(x, 10.0, backend="cpu")
    assert torch.isnan(y[0, 0, :8, :8]).any()
    assert not torch.isfinite(y[0, 0, 8:, 8:]).all()
    assert torch.isfinite(y[0, 0, :8, 8:]).all() and torch.isfinite(y[0, 0, 8:, :8]).all()


def test_module_layer():
    layer = gcln_fast.QuantizedDCT(5.0, channels=3, trainable=True)
    assert "q=table(3, 8, 8)" in repr(layer) and "trainable=True" in repr(layer)
    before = layer.q.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    for step in range(3):
        opt.zero_grad()
        (layer(rand((2, 3, 16, 16), seed=step)) - 0.5).square().sum().backward()
        opt.step()
    assert bool((layer.q > 0).all()) and not torch.equal(layer.q, before)
    fixed = gcln_fast.QuantizedDCT(10.0)
    assert list(fixed.parameters()) == [] and fixed.q.shape == ()
    restored = gcln_fast.QuantizedDCT(1.0, channels=3, trainable=True)
    restored.load_state_dict(layer.state_dict())
    torch.testing.assert_close(restored.q, layer.q)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "x,q,kwargs,exc,match",
    [
        (torch.rand(3, 8, 8), 10.0, {}, ValueError, "x must have shape"),
        (torch.randint(0, 255, (1, 3, 8, 8)), 10.0, {}, TypeError, "x must be float32"),
        (torch.rand(1, 3, 8, 8, dtype=torch.complex64), 10.0, {}, TypeError, "x must be float32"),
        (torch.rand(1, 3, 8, 8, dtype=torch.float64), 10.0, {}, TypeError, "x must be float32"),
        ([[1.0]], 10.0, {}, TypeError, "x must be a torch.Tensor"),
        (torch.rand(1, 3, 8, 8), 0.0, {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), -1.0, {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), float("nan"), {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), float("inf"), {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), torch.full((8, 8), -2.0), {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), torch.full((3, 8, 8), float("nan")), {}, ValueError, "q must be positive"),
        (torch.rand(1, 3, 8, 8), torch.ones(7, 7), {}, ValueError, "q must be a number"),
        (torch.rand(1, 3, 8, 8), torch.ones(4, 8, 8), {}, ValueError, "C=3"),
        (torch.rand(1, 3, 8, 8), torch.ones(1, 3, 8, 8), {}, ValueError, "q must be a number"),
        (torch.rand(1, 3, 8, 8), torch.ones(8, 8, dtype=torch.int32), {}, TypeError, "q must be a floating-point"),
        (torch.rand(1, 3, 8, 8), torch.ones(8, 8, dtype=torch.complex64), {}, TypeError, "q must be a floating-point"),
        (torch.rand(1, 3, 8, 8), "10", {}, TypeError, "q must be a number or a tensor"),
        (torch.rand(1, 3, 8, 8), torch.ones(8, 8, device="meta"), {}, ValueError, "q is on meta"),
        (torch.rand(1, 3, 8, 8), 10.0, {"backend": "fast"}, ValueError, "backend must be one of"),
        (torch.rand(1, 3, 8, 8), 10.0, {"scale": 0.0}, ValueError, "scale must be positive"),
        (torch.rand(1, 3, 8, 8), 10.0, {"scale": "255"}, TypeError, "scale must be a real number"),
    ],
)
def test_bad_input_errors(x, q, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gcln_fast.qnt(x, q, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_backend_names_the_available_ones():
    with pytest.raises(ValueError, match=r"backend 'cuda' is not available .* available: \['reference', 'cpu'"):
        gcln_fast.qnt(torch.rand(1, 1, 8, 8), 10.0, backend="cuda")


def test_direct_op_calls_are_checked_in_cpp():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="q must be positive"):
        torch.ops.gcln_fast.qnt(x, torch.zeros(1, 8, 8), 255.0)
    with pytest.raises(ValueError, match="q must have shape"):
        torch.ops.gcln_fast.qnt(x, torch.ones(2, 8, 8), 255.0)
    with pytest.raises(TypeError, match="float32"):
        torch.ops.gcln_fast.qnt(x, torch.ones(1, 8, 8, dtype=torch.float64), 255.0)
    with pytest.raises(ValueError, match="x must have shape"):
        torch.ops.gcln_fast.qnt(x[0], torch.ones(1, 8, 8), 255.0)


def test_layer_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        gcln_fast.QuantizedDCT(10.0, backend="gpu")
    with pytest.raises(ValueError, match="q must be positive"):
        gcln_fast.QuantizedDCT(-1.0)
    with pytest.raises(ValueError, match="shape"):
        gcln_fast.QuantizedDCT(torch.ones(3, 8, 8), per_frequency=True)
    with pytest.raises(ValueError, match="channels"):
        gcln_fast.QuantizedDCT(10.0, channels=3)(torch.rand(1, 2, 8, 8))


def test_qnt_function_shares_the_backward():
    x = rand((2, 3, 9, 9)).requires_grad_()
    q = torch.full((1, 8, 8), 6.0, requires_grad=True)
    gy = torch.randn(2, 3, 9, 9)
    gcln_fast.QNTFunction.apply(x, q, 255.0, "cpu").backward(gy)
    gq_fn, gx_fn = q.grad.clone(), x.grad.clone()
    q.grad = x.grad = None
    torch.ops.gcln_fast.qnt(x, q, 255.0).backward(gy)
    assert torch.equal(q.grad, gq_fn) and torch.equal(x.grad, gx_fn)
