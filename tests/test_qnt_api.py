"""The public API and the layer: argument checks, bounds, settable attributes, pickling, the
trainable step's floor. Nothing here needs the compiled extension (the reference backend serves)."""

import io
import pickle

import pytest
import torch

import gcln_fast
from gcln_fast import ops

from helpers import rand, randn

X = torch.rand(1, 3, 8, 8)


@pytest.mark.parametrize(
    "x,q,kwargs,exc,match",
    [
        (torch.rand(3, 8, 8), 10.0, {}, ValueError, "x must have shape"),
        (torch.randint(0, 255, (1, 3, 8, 8)), 10.0, {}, TypeError, "x must be float32"),
        (torch.rand(1, 3, 8, 8, dtype=torch.complex64), 10.0, {}, TypeError, "x must be float32"),
        (torch.rand(1, 3, 8, 8, dtype=torch.float64), 10.0, {}, TypeError, "x must be float32"),
        ([[1.0]], 10.0, {}, TypeError, "x must be a torch.Tensor"),
        (X, 0.0, {}, ValueError, "q must be finite and in"),
        (X, -1.0, {}, ValueError, "q must be finite and in"),
        (X, float("nan"), {}, ValueError, "q must be finite and in"),
        (X, float("inf"), {}, ValueError, "q must be finite and in"),
        (X, 1e39, {}, ValueError, r"q must be finite and in .*got 1e\+39"),
        (X, 1e-37, {}, ValueError, r"q must be finite and in .*got 1e-37"),
        (X, torch.tensor(1e39, dtype=torch.float64), {}, ValueError, r"got 1e\+39"),
        (X, torch.tensor(0.0, dtype=torch.float16), {}, ValueError, "q must be finite and in"),
        (X, torch.full((8, 8), -2.0), {}, ValueError, "q must be finite and in"),
        (X, torch.full((3, 8, 8), float("nan")), {}, ValueError, "q must be finite and in"),
        (X, torch.full((1, 3, 8, 8), 1e-30), {}, ValueError, "q must be finite and in"),
        (X, torch.ones(7, 7), {}, ValueError, "q must be a number"),
        (X, torch.ones(4, 8, 8), {}, ValueError, "C=3"),
        (X, torch.ones(2, 3, 8, 8), {}, ValueError, "per-sample"),  # N = 1
        (X, torch.ones(1, 2, 8, 8), {}, ValueError, "per-sample"),
        (X, torch.ones(1, 1, 3, 8, 8), {}, ValueError, "q must be a number"),
        (X, torch.ones(8, 8, dtype=torch.int32), {}, TypeError, "q must be a floating-point"),
        (X, torch.ones(8, 8, dtype=torch.complex64), {}, TypeError, "q must be a floating-point"),
        (X, "10", {}, TypeError, "q must be a number or a tensor"),
        (X, torch.ones(8, 8, device="meta"), {}, ValueError, "q is on meta"),
        (X, 10.0, {"backend": "fast"}, ValueError, "backend must be one of"),
        (X, 10.0, {"scale": 0.0}, ValueError, "scale must be positive"),
        (X, 10.0, {"scale": 1e39}, ValueError, "scale must be positive"),
        (X, 10.0, {"scale": "255"}, TypeError, "scale must be a real number"),
        (X, 10.0, {"surrogate": "tanh"}, ValueError, "surrogate must be one of"),
        (X, 10.0, {"soft_forward": 1}, TypeError, "soft_forward must be a bool"),
    ],
)
def test_bad_input_errors(x, q, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gcln_fast.qnt(x, q, **kwargs)


def test_the_reference_checks_like_the_op():
    with pytest.raises(ValueError, match="q must be finite and in"):
        gcln_fast.qnt_reference(X, 1e-37)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        gcln_fast.qnt_reference(X, 10.0, surrogate="round")


def test_q_at_the_bounds_is_accepted():
    lo = 255.0 * 2.0**-64
    assert torch.isfinite(gcln_fast.qnt(X, lo, backend="reference")).all()
    assert torch.isfinite(gcln_fast.qnt(X, 3.0e38, backend="reference")).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_backend_names_the_available_ones():
    with pytest.raises(ValueError, match=r"backend 'cuda' is not available .* available: \['reference'"):
        gcln_fast.qnt(torch.rand(1, 1, 8, 8), 10.0, backend="cuda")


def test_auto_order_for_cuda_tensors_is_labelled_a_default():
    assert ops._CUDA_PREFERENCE == ("cuda", "triton")
    source = open(ops.__file__).read()
    assert "default, not measured" in source and "Measured by" not in source


# --------------------------------------------------------------------------- under torch.compile


@pytest.mark.parametrize(
    "q", [-1.0, 1e39, 1e-37, torch.tensor(-1.0), torch.full((8, 8), float("nan"))], ids=lambda q: repr(q)[:20]
)
def test_argument_checks_run_under_torch_compile(q):
    f = torch.compile(lambda x, q: gcln_fast.qnt(x, q, backend="reference"), fullgraph=True)
    x = rand((1, 3, 8, 8))
    f(x, 2.0 if not isinstance(q, torch.Tensor) else torch.full_like(q, 2.0))  # compiled with a good q first
    with pytest.raises(ValueError, match="q must be finite and in"):
        f(x, q)


# --------------------------------------------------------------------------- the layer


def test_layer_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        gcln_fast.QuantizedDCT(10.0, backend="gpu")
    with pytest.raises(ValueError, match="q must be finite and in"):
        gcln_fast.QuantizedDCT(-1.0)
    with pytest.raises(ValueError, match="shape"):
        gcln_fast.QuantizedDCT(torch.ones(3, 8, 8), per_frequency=True)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        gcln_fast.QuantizedDCT(10.0, surrogate="ste")
    with pytest.raises(ValueError, match="q must be >= q_min"):
        gcln_fast.QuantizedDCT(1e-4, trainable=True)
    with pytest.raises(ValueError, match="q_min must be in"):
        gcln_fast.QuantizedDCT(10.0, trainable=True, q_min=0.0)
    layer = gcln_fast.QuantizedDCT(10.0, channels=3)
    with pytest.raises(ValueError, match="C=2"):
        layer(torch.rand(1, 2, 8, 8))


def test_layer_attributes_are_settable_and_validated():
    layer = gcln_fast.QuantizedDCT(10.0, backend="reference")
    x, gy = rand((1, 3, 9, 9), seed=1).requires_grad_(), randn((1, 3, 9, 9), seed=2)
    layer(x).backward(gy)
    assert torch.equal(x.grad, gy)  # identity: straight-through
    layer.surrogate = "cubic"
    x.grad = None
    layer(x).backward(gy)
    assert not torch.allclose(x.grad, gy)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        layer.surrogate = "sigmoid"
    with pytest.raises(TypeError, match="soft_forward must be a bool"):
        layer.soft_forward = "yes"
    with pytest.raises(ValueError, match="backend must be one of"):
        layer.backend = "tpu"
    assert layer.surrogate == "cubic"
    assert "surrogate='cubic'" in repr(layer)


def test_layer_trains_and_reloads():
    layer = gcln_fast.QuantizedDCT(5.0, channels=3, trainable=True, backend="reference")
    assert "q=table(3, 8, 8)" in repr(layer) and "trainable=True" in repr(layer)
    before = layer.q.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    for step in range(3):
        opt.zero_grad()
        (layer(rand((2, 3, 16, 16), seed=step)) - 0.5).square().sum().backward()
        opt.step()
    assert not torch.equal(layer.q, before)
    fixed = gcln_fast.QuantizedDCT(10.0)
    assert list(fixed.parameters()) == [] and fixed.q.shape == ()
    restored = gcln_fast.QuantizedDCT(1.0, channels=3, trainable=True)
    restored.load_state_dict(layer.state_dict())
    torch.testing.assert_close(restored.q, layer.q)


def test_trainable_layer_pickles_and_saves():
    layer = gcln_fast.QuantizedDCT(7.0, per_frequency=True, trainable=True, surrogate="sine", backend="reference")
    x = rand((1, 3, 8, 8), seed=3)
    clone = pickle.loads(pickle.dumps(layer))
    torch.testing.assert_close(clone(x), layer(x))
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.surrogate == "sine" and isinstance(loaded.q, torch.nn.Parameter)
    torch.testing.assert_close(loaded(x), layer(x))


def test_first_edition_checkpoints_load():
    """The first edition stored a trainable q as log q under torch.nn.utils.parametrize."""
    layer = gcln_fast.QuantizedDCT(1.0, per_frequency=True, trainable=True)
    old = {"parametrizations.q.original": torch.full((8, 8), 7.0).log()}
    layer.load_state_dict(old)
    torch.testing.assert_close(layer.q.detach(), torch.full((8, 8), 7.0))


def test_trainable_q_is_floored_and_recovers():
    layer = gcln_fast.QuantizedDCT(2.0, trainable=True, q_min=0.5, backend="reference")
    x = rand((2, 3, 16, 16), seed=4)
    with torch.no_grad():
        layer.q.fill_(-3.0)  # what one huge step could do
    y = layer(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, gcln_fast.qnt(x, 0.5, backend="reference"))
    # A loss that wants a larger q passes its gradient; one that wants a smaller q does not.
    layer.q.grad = None
    (-(layer(x) - x).square().sum()).backward()  # larger q -> larger error: this loss wants q up
    up = layer.q.grad.clone()
    layer.q.grad = None
    (layer(x) - x).square().sum().backward()
    assert up.item() < 0 and layer.q.grad.item() == 0.0


def test_lsq_grad_scale_scales_grad_q_only():
    x, gy = rand((2, 3, 16, 24), seed=5), randn((2, 3, 16, 24), seed=6)
    grads, outs = [], []
    for on in (False, True):
        q = torch.full((8, 8), 6.0, requires_grad=True)
        y = gcln_fast.qnt(x, q, backend="reference", lsq_grad_scale=on)
        y.backward(gy)
        grads.append(q.grad)
        outs.append(y.detach())
    assert torch.equal(outs[0], outs[1])
    blocks = 2 * 3 * 2 * 3
    factor = (6.0 / (8 * 255.0 * blocks)) ** 0.5
    torch.testing.assert_close(grads[1], grads[0] * factor)


def test_qnt_function_takes_the_canonical_table_and_shares_the_backward():
    x, gy = rand((2, 3, 9, 9), seed=7), randn((2, 3, 9, 9), seed=8)
    results = []
    for use_function in (True, False):
        xs = x.clone().requires_grad_()
        q = torch.full((2, 1, 8, 8), 6.0, requires_grad=True)
        if use_function:
            y = gcln_fast.QNTFunction.apply(xs, q, 255.0, "reference", "cubic", False)
        else:
            y = gcln_fast.qnt(xs, q, backend="reference", surrogate="cubic")
        y.backward(gy)
        results.append((y.detach(), xs.grad, q.grad))
    for got, want in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="canonical shape"):
        gcln_fast.QNTFunction.apply(x, torch.ones(8, 8), 255.0, "reference", "identity", False)
