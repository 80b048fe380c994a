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
