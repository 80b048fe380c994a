"""pytest-benchmark suite for the QNT op: ``pytest bench/ --benchmark-only``.

Every implementation runs on the same input in the same session, grouped per
shape and pass, so pytest-benchmark's comparison columns are the ratios.
"""

import functools

import pytest
import torch

import gcln_fast
from gcln_fast.reference import qnt_reference

SHAPES = [(256, 3, 32, 32), (32, 3, 224, 224)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IMPLS = {
    "eager-reference": lambda x: qnt_reference(x, 10.0),
    "compiled-reference": torch.compile(lambda x: qnt_reference(x, 10.0), dynamic=False),
    "clone": torch.clone,
    **{
        f"gcln_fast-{b}": functools.partial(gcln_fast.qnt, q=10.0, backend=b)
        for b in gcln_fast.available_backends(DEVICE)
        if b != "reference"
    },
}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward(benchmark, impl, shape):
    benchmark.group = f"forward {'x'.join(map(str, shape))}"
    x = torch.rand(shape, device=DEVICE)
    fn = IMPLS[impl]

    def call():
        with torch.no_grad():
            fn(x)
        _sync()

    call()
    benchmark(call)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_backward(benchmark, impl, shape):
    benchmark.group = f"forward+backward {'x'.join(map(str, shape))}"
    x = torch.rand(shape, device=DEVICE, requires_grad=True)
    grad = torch.randn(shape, device=DEVICE)
    fn = IMPLS[impl]

    def call():
        fn(x).backward(grad)
        x.grad = None
        _sync()

    call()
    benchmark(call)
