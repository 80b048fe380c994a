"""What only the CUDA kernel (csrc/cuda/) has; the shared parity, gradient, opcheck and compile
tests run for it through the ``backend`` fixture (test_qnt_backends.py).

Skipped, with the reason, where there is no GPU or the extension was built without its CUDA kernels.
"""

import pytest
import torch

import gcln_fast

from helpers import Backend, assert_grads_close, assert_qnt_close, backend_grads, make_q, rand, randn


def _skip_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if "cuda" not in gcln_fast.available_backends("cuda"):
        return "the extension has no CUDA kernel for gcln_fast::qnt (built without nvcc, or failed to load)"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

DEV = "cuda"


@pytest.mark.parametrize(
    "shape", [(96, 3, 16, 24), (64, 3, 64, 64), (2, 3, 250, 262), (2, 7, 17, 23)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("form", ["scalar", "channel", "sample"])
def test_forward_on_shapes_that_use_many_ctas(shape, form):
    x, q = rand(shape), make_q(form, shape)
    y = gcln_fast.qnt(x.to(DEV), q if not isinstance(q, torch.Tensor) else q.to(DEV), backend="cuda")
    assert_qnt_close(y, x, q)


VIEWS = {
    # Data pointer 4 bytes past an allocation: no 16-byte alignment anywhere.
    "misaligned": lambda t: t.flatten()[1 : 1 + 3 * 4 * 40 * 40].view(3, 4, 40, 40)[..., :37],
    "channels-last-slice": lambda t: t.contiguous(memory_format=torch.channels_last)[:, :, 3:, 5:],
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_unaligned_and_sliced_views(view, dtype):
    base = rand((3, 4, 41, 40), dtype)
    x = VIEWS[view](base.to(DEV))
    q = make_q("channel", x.shape)
    assert_qnt_close(gcln_fast.qnt(x, q.to(DEV), backend="cuda"), VIEWS[view](base).contiguous(), q)


def test_runs_on_the_current_stream():
    x_cpu = rand((4, 3, 40, 48))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = gcln_fast.qnt(x_cpu.to(DEV), 10.0, backend="cuda")
    stream.synchronize()
    assert_qnt_close(y, x_cpu, 10.0)


@pytest.mark.parametrize("surrogate", ["identity", "cubic"])
def test_gradients_on_a_large_batch(surrogate):
    x, gy = rand((32, 3, 64, 72)), randn((32, 3, 64, 72), seed=5)
    q = make_q("sample1", x.shape)
    gx, gq = backend_grads(Backend("cuda", DEV), x, gy, q, surrogate=surrogate)
    assert_grads_close(gx, gq, x, gy, q, surrogate=surrogate)


@pytest.mark.parametrize("nq", [1, 16])
def test_backward_is_deterministic(nq):
    x, gy = rand((16, 3, 128, 136)).to(DEV), randn((16, 3, 128, 136), seed=7).to(DEV)
    table = torch.full((nq, 3, 8, 8), 5.0, device=DEV)
    outs = [torch.ops.gcln_fast.qnt_backward(gy, x, table, 255.0, "cubic", False, True, True) for _ in range(3)]
    for gx, gq in outs[1:]:
        assert torch.equal(gx, outs[0][0]) and torch.equal(gq, outs[0][1])


def test_rounding_code_on_the_device_equals_the_contract():
    """The device code's R(u) (nvcc's arithmetic, contraction included) equals the contract's
    formula bit for bit on the dense samples of test_qnt_cpu.py; s and s' to float32 round-off."""
    from test_qnt_cpu import _dense_u

    from gcln_fast.reference import round_tie, surrogate_slope, surrogate_value

    u = _dense_u()
    for surrogate in ["identity", "cubic", "sine"]:
        r, value, slope = (t.cpu() for t in torch.ops.gcln_fast.qnt_rounding(u.to(DEV), surrogate))
        want = round_tie(u)
        same = (r == want) | (r.isnan() & want.isnan())
        assert bool(same.all()), f"{int((~same).sum())} differ, e.g. u={u[~same][:4].tolist()}"
        ok = u.abs() < 1e4  # where float32 s(u) and s'(u) are meaningful to a few ulps
        u64 = u[ok].double()
        torch.testing.assert_close(value[ok].double(), surrogate_value(u64, surrogate), atol=4e-6, rtol=1e-6)
        torch.testing.assert_close(slope[ok].double(), surrogate_slope(u64, surrogate), atol=2e-6, rtol=1e-6)


# Every place the forward keeps its tables (see test_qnt_cuda_host_sim.py, which checks the
# mode each shape gets): all in shared memory, the CTA's range of per-sample tables, global.
@pytest.mark.parametrize(
    "shape,form,channels_last",
    [((2, 8, 9, 9), "channel", False), ((4, 3, 32, 33), "sample", False), ((12, 3, 16, 15), "sample1", True),
     ((5, 3, 8, 8), "sample", False), ((4, 3, 32, 32), "sample", True)],
)  # fmt: skip
def test_forward_and_backward_in_every_table_mode(shape, form, channels_last):
    x, gy, q = rand(shape, seed=3), randn(shape, seed=4), make_q(form, shape, seed=5)
    xd = x.to(DEV).contiguous(memory_format=torch.channels_last) if channels_last else x.to(DEV)
    assert_qnt_close(gcln_fast.qnt(xd, q.to(DEV), backend="cuda"), x, q)
    gx, gq = backend_grads(Backend("cuda", DEV), x, gy, q, surrogate="sine")
    assert_grads_close(gx, gq, x, gy, q, surrogate="sine")
