"""pytest-benchmark suite for the QNT op: ``pytest bench/ --benchmark-only``.

Every implementation runs on the same input in the same session, grouped per shape and pass, so
pytest-benchmark's comparison columns are the ratios. The implementations are the eager and
compiled reference, ``x.clone()`` and every gcln_fast backend available for the device (CUDA and
Triton rows appear by themselves on a GPU); the passes are the forward with a shared and a
per-sample table, and the backward alone of each surrogate (plus grad_q of a trainable step).
"""

import pytest
import torch

import gcln_fast
from gcln_fast.reference import qnt_reference

SHAPES = [(256, 3, 32, 32), (32, 3, 224, 224)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
Q = 10.0


def _reference(x, q, surrogate):
    return qnt_reference(x, q, surrogate=surrogate)


IMPLS = {
    "eager-reference": _reference,
    "compiled-reference": torch.compile(_reference, dynamic=False),
    "clone": lambda x, q, surrogate: x.clone(),
    **{
        f"gcln_fast-{b}": (lambda x, q, surrogate, b=b: gcln_fast.qnt(x, q, backend=b, surrogate=surrogate))
        for b in gcln_fast.available_backends(DEVICE)
        if b != "reference"
    },
}
ids = lambda s: "x".join(map(str, s))  # noqa: E731


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _per_sample_q(n):
    return torch.linspace(0.5 * Q, 2 * Q, n, device=DEVICE).reshape(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("table", ["shared", "per-sample"])
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_forward(benchmark, impl, table, shape):
    benchmark.group = f"forward {ids(shape)} {table} q"
    x = torch.rand(shape, device=DEVICE)
    q = Q if table == "shared" else _per_sample_q(shape[0])
    fn = IMPLS[impl]

    def call():
        with torch.no_grad():
            fn(x, q, "identity")
        _sync()

    call()
    benchmark(call)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize(
    "surrogate,trainable", [("identity", True), ("cubic", False), ("cubic", True), ("sine", False)]
)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_backward(benchmark, impl, surrogate, trainable, shape):
    """The backward alone (autograd.grad on a kept graph)."""
    benchmark.group = f"backward {ids(shape)} {surrogate}{' + grad_q' if trainable else ''}"
    x = torch.rand(shape, device=DEVICE, requires_grad=True)
    q = torch.tensor(Q, device=DEVICE, requires_grad=True) if trainable else Q
    grad = torch.randn(shape, device=DEVICE)
    y = IMPLS[impl](x, q, surrogate)
    inputs = [x, q] if trainable else [x]

    def call():
        torch.autograd.grad(y, inputs, grad, retain_graph=True, allow_unused=True)
        _sync()

    call()
    benchmark(call)
