"""Every QNT backend against the float64 reference, through one ``backend`` fixture (conftest.py).

The way pytorch/extension-cpp tests its ops: one correctness, one gradient, one opcheck and one
torch.compile test, each run for every backend available here (reference, cpu, triton under the
interpreter, cuda with a GPU); the others show as skipped with the reason. What only one backend
has lives in its own file (test_qnt_cpu.py, test_qnt_cuda.py, test_qnt_triton.py).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gcln_fast
from gcln_fast._validate import canonical_q

from helpers import (
    DTYPES,
    Q_FORMS,
    SURROGATES,
    assert_grads_close,
    assert_qnt_close,
    backend_grads,
    check_compile_fullgraph,
    make_q,
    rand,
    randn,
)

# Partial edge blocks in one or both directions, planes smaller than a block, several planes.
SHAPES = [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 17, 33), (3, 3, 16, 16), (2, 1, 15, 1)]
SMALL = [(2, 3, 7, 9), (1, 2, 17, 33)]  # for the Triton interpreter


def shapes_for(backend):
    return SMALL if backend.slow else SHAPES


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", Q_FORMS)
def test_forward_matches_reference(backend, form, dtype):
    for shape in shapes_for(backend):
        x, q = rand(shape, dtype), make_q(form, shape)
        y = backend.qnt(x, q)
        assert y.dtype == dtype and y.shape == x.shape and y.device.type == backend.device
        assert_qnt_close(y, x, q)


@pytest.mark.parametrize("surrogate", ["cubic", "sine"])
@pytest.mark.parametrize("form", ["scalar", "sample"])
def test_soft_forward_matches_reference(backend, surrogate, form):
    x = rand((2, 3, 11, 13), seed=1)
    q = make_q(form, x.shape)
    y = backend.qnt(x, q, surrogate=surrogate, soft_forward=True)
    assert_qnt_close(y, x, q, surrogate=surrogate, soft_forward=True)
    assert not torch.equal(y.cpu(), backend.qnt(x, q).cpu())


@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed", "expanded"])
def test_memory_layouts(backend, layout):
    base = rand((2, 3, 20, 27), seed=2)
    x = {
        "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
        "strided": lambda t: t[:, :, ::2, 1::3],
        "transposed": lambda t: t.transpose(2, 3),
        "expanded": lambda t: t[:1].expand(3, -1, -1, -1),
    }[layout](backend.put(base))
    q = make_q("channel", x.shape)
    y = backend.qnt(x, q)
    assert y.stride() == torch.empty_like(x).stride()
    assert_qnt_close(y, x.cpu().contiguous(), q)


def test_scale(backend):
    for scale in (1.0, 1000.0):
        x = rand((2, 2, 11, 19), seed=3)
        q = make_q("freq", x.shape) / (50 if scale == 1.0 else 1)
        assert_qnt_close(backend.qnt(x, q, scale=scale), x, q, scale)


def test_empty_tensors(backend):
    for shape in [(0, 3, 8, 8), (2, 3, 0, 5), (2, 0, 4, 4)]:
        x = backend.put(torch.empty(shape))
        assert backend.qnt(x, 10.0).shape == shape
        table = backend.put(torch.full((1, 1, 8, 8), 4.0))
        gx, gq = backend.ops[1](x, x, table, 255.0, "cubic", False, True, True)
        assert gx.shape == shape and gq.shape == (1, 1, 8, 8) and not bool(gq.any())


def test_nan_and_inf_stay_in_their_block(backend):
    x = rand((1, 2, 20, 20), seed=4)
    x[0, 0, 3, 4] = float("nan")  # block (0, 0) of channel 0
    x[0, 1, 17, 18] = float("inf")  # block (2, 2) of channel 1, a partial edge block
    bad = ~torch.isfinite(backend.qnt(x, 10.0).cpu())
    assert bool(bad[0, 0, :8, :8].all()) and bool(bad[0, 1, 16:, 16:].all())
    bad[0, 0, :8, :8] = False
    bad[0, 1, 16:, 16:] = False
    assert not bool(bad.any())


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("form", ["tensor0d", "freq", "channel", "sample1", "sample"])
def test_gradients_match_reference(backend, surrogate, form):
    for shape in shapes_for(backend)[1:3]:
        x, gy = rand(shape, seed=5), randn(shape, seed=6)
        q = make_q(form, shape)
        gx, gq = backend_grads(backend, x, gy, q, surrogate=surrogate)
        assert gq.shape == canonical_q(q, x, 255.0).shape and gq.dtype == torch.float32
        assert_grads_close(gx, gq, x, gy, q, surrogate=surrogate)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gradients_low_precision(backend, dtype):
    x, gy = rand((2, 3, 16, 24), dtype, seed=7), randn((2, 3, 16, 24), dtype, seed=8)
    gx, gq = backend_grads(backend, x, gy, torch.full((8, 8), 7.0), surrogate="cubic")
    assert gx.dtype == dtype
    assert_grads_close(gx, gq, x, gy, torch.full((8, 8), 7.0), surrogate="cubic")


def test_identity_grad_x_is_grad_y_without_a_copy(backend):
    x = backend.put(rand((2, 3, 9, 14))).requires_grad_()
    gy = backend.put(randn((2, 3, 9, 14)))
    (gx,) = torch.autograd.grad(gcln_fast.qnt(x, 10.0, backend=backend.name), x, gy)
    assert gx.data_ptr() == gy.data_ptr()


@pytest.mark.parametrize("need", [(True, False), (False, True), (True, True)], ids=["x", "q", "both"])
def test_backward_op_outputs(backend, need):
    """Each output of qnt_backward on its own equals the fused pair's, and one not needed is (0,)."""
    x, gy = backend.put(rand((2, 3, 9, 14), seed=9)), backend.put(randn((2, 3, 9, 14), seed=10))
    table = backend.put(torch.rand(2, 1, 8, 8) * 10 + 2)
    both = backend.ops[1](gy, x, table, 255.0, "sine", False, True, True)
    got = backend.ops[1](gy, x, table, 255.0, "sine", False, *need)
    for out, needed, full in zip(got, need, both, strict=True):
        if needed:
            torch.testing.assert_close(out, full, atol=0, rtol=0)
        else:
            assert out.shape == (0,)


def test_qnt_function_shares_the_backward(backend):
    x = backend.put(rand((2, 3, 9, 9)))
    gy = backend.put(randn((2, 3, 9, 9)))
    results = []
    for use_function in (True, False):
        xs = x.clone().requires_grad_()
        q = backend.put(torch.full((1, 3, 8, 8), 6.0)).requires_grad_()
        if use_function:
            gcln_fast.QNTFunction.apply(xs, q, 255.0, backend.name, "cubic", False).backward(gy)
        else:
            gcln_fast.qnt(xs, q, backend=backend.name, surrogate="cubic").backward(gy)
        results.append((xs.grad, q.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


# --------------------------------------------------------------------------- registration


def _opcheck_cases(backend):
    x = backend.put(rand((2, 3, 9, 14))).requires_grad_()
    gy = backend.put(randn((2, 3, 9, 14)))
    for table_shape in [(1, 1, 8, 8), (1, 3, 8, 8), (2, 1, 8, 8), (2, 3, 8, 8)]:
        for surrogate in SURROGATES:
            table = backend.put(torch.rand(table_shape) * 10 + 2).requires_grad_()
            yield (x, table, 255.0, surrogate, surrogate == "sine"), (
                gy, x.detach(), table.detach(), 255.0, surrogate, False, surrogate != "identity", True
            )  # fmt: skip


def test_opcheck(backend):
    if backend.name == "reference":
        pytest.skip("the reference is plain PyTorch, not a registered op")
    forward_op, backward_op = backend.ops
    for forward_args, backward_args in _opcheck_cases(backend):
        torch.library.opcheck(forward_op, forward_args)
        torch.library.opcheck(backward_op, backward_args)


@pytest.mark.parametrize("surrogate", ["identity", "cubic"])
@pytest.mark.parametrize("trainable", [False, True])
def test_torch_compile_fullgraph_matches_eager(backend, trainable, surrogate):
    check_compile_fullgraph(backend.device, backend.name, trainable, surrogate)


# --------------------------------------------------------------------------- random shapes


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    form=st.sampled_from(Q_FORMS),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_parity_on_random_shapes(n, c, h, w, dtype, form, channels_last, seed):
    """The fused CPU kernel on random shapes and layouts (hypothesis cannot take a fixture)."""
    if "cpu" not in gcln_fast.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    x = rand((n, c, h, w), dtype, seed)
    q = make_q(form, x.shape, seed)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    assert_qnt_close(gcln_fast.qnt(xin, q, backend="cpu"), x, q)
