"""What only the C++ CPU kernel has (the shared parity suite is test_qnt_backends.py): its
elementwise rounding code checked densely, thread-count independent reductions, direct op calls
checked in C++, strided gradients."""

import pytest
import torch

import gcln_fast
from gcln_fast.qnt_constants import TIE_HALF_WIDTH
from gcln_fast.reference import round_tie, surrogate_slope, surrogate_value

from helpers import SURROGATES, rand, randn

pytestmark = pytest.mark.skipif("cpu" not in gcln_fast.available_backends("cpu"), reason="C++ extension not built")

OPS = torch.ops.gcln_fast


def _dense_u() -> torch.Tensor:
    """float32 u around half-integers (both signs, |u| up to 2**24) and around both edges of the
    tie window, stepping through consecutive float32 values there; plus special values."""
    parts = []
    for k in [
        0,
        1,
        2,
        3,
        7,
        10,
        63,
        64,
        100,
        255,
        1000,
        2047,
        4095,
        2**14 + 3,
        2**15 - 1,
        2**15 + 1,
        2**20 + 5,
        2**22 + 1,
    ]:
        for sign in (1.0, -1.0):
            h = sign * (k + 0.5)
            tau = TIE_HALF_WIDTH
            for centre in (h, h + tau, h - tau, float(sign * k), float(sign * (k + 1))):
                c = torch.tensor(centre, dtype=torch.float32)
                steps = torch.arange(-3000, 3001, dtype=torch.int32)
                parts.append((c.view(torch.int32) + steps).view(torch.float32))  # consecutive floats
    g = torch.Generator().manual_seed(0)
    parts.append(torch.randn(1_000_000, generator=g) * 300)
    parts.append((torch.randint(-(2**20), 2**20, (200_000,), generator=g) / 2.0).float())
    special = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 2.0**23, 2.0**24 + 2, 3e38, -3e38, 1e-40]
    parts.append(torch.tensor(special))
    return torch.cat(parts)


def test_rounding_code_equals_the_contract_on_dense_samples():
    """The kernels' R(u) (vector code, qnt_rounding) equals the contract's formula for every sampled
    float32 u, including consecutive floats across every window edge."""
    u = _dense_u()
    r, _, _ = OPS.qnt_rounding(u, "identity")
    want = round_tie(u)
    same = (r == want) | (r.isnan() & want.isnan())
    assert bool(same.all()), f"{int((~same).sum())} differ, e.g. u={u[~same][:4].tolist()}"
    assert int((round_tie(u) != torch.round(u)).sum()) > 1000  # the window does change decisions


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_surrogate_code_matches_the_formulas(surrogate):
    u = torch.cat([torch.linspace(-40, 40, 200_001), torch.arange(-20, 21) + 0.5])
    r, value, slope = OPS.qnt_rounding(u, surrogate)
    u64 = u.double()
    torch.testing.assert_close(r, round_tie(u))
    # float32 evaluation of s and s': a few ulps of |u| (the reduction u - rint(u) is exact)
    torch.testing.assert_close(value.double(), surrogate_value(u64, surrogate), atol=4e-6, rtol=1e-6)
    torch.testing.assert_close(slope.double(), surrogate_slope(u64, surrogate), atol=2e-6, rtol=1e-6)


def test_grad_q_is_deterministic_across_thread_counts():
    x, gy = rand((8, 3, 40, 56)), randn((8, 3, 40, 56), seed=7)
    threads = torch.get_num_threads()
    try:
        for table in (torch.full((1, 3, 8, 8), 5.0), torch.full((8, 1, 8, 8), 5.0)):
            outs = []
            for n in (1, 2, 1, 2):
                torch.set_num_threads(n)
                outs.append(OPS.qnt_backward(gy, x, table, 255.0, "cubic", False, True, True))
            for gx, gq in outs[1:]:
                assert torch.equal(gq, outs[0][1]) and torch.equal(gx, outs[0][0])
    finally:
        torch.set_num_threads(threads)


def test_backward_takes_strided_and_expanded_gradients():
    x = rand((2, 3, 13, 21), seed=1).contiguous(memory_format=torch.channels_last)
    table = torch.rand(2, 3, 8, 8) * 10 + 2
    for gy in (torch.ones(()).expand(2, 3, 13, 21), randn((2, 3, 26, 21), seed=2)[:, :, ::2]):
        got = OPS.qnt_backward(gy, x, table, 255.0, "sine", False, True, True)
        want = OPS.qnt_backward(gy.contiguous(), x.contiguous(), table, 255.0, "sine", False, True, True)
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        torch.testing.assert_close(got[1], want[1], atol=0, rtol=0)


def test_backward_accepts_grad_y_of_another_dtype():
    x = rand((2, 3, 16, 24), torch.float16)
    gy = randn((2, 3, 16, 24), seed=2)
    table = torch.full((1, 3, 8, 8), 5.0)
    got = OPS.qnt_backward(gy, x, table, 255.0, "cubic", False, True, True)
    want = OPS.qnt_backward(gy.half(), x, table, 255.0, "cubic", False, True, True)
    assert got[0].dtype == torch.float16
    torch.testing.assert_close(got, want, atol=0, rtol=0)


X = torch.rand(1, 3, 8, 8)
Q = torch.ones(1, 1, 8, 8)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: OPS.qnt(X, torch.zeros(1, 1, 8, 8), 255.0, "identity", False), ValueError, "q must be finite and in"),
        (lambda: OPS.qnt(X, torch.full((1, 1, 8, 8), 1e-30), 255.0, "identity", False), ValueError, "q must be"),
        (lambda: OPS.qnt(X, torch.ones(1, 2, 8, 8), 255.0, "identity", False), ValueError, "q must have shape"),
        (lambda: OPS.qnt(X, torch.ones(2, 1, 8, 8), 255.0, "identity", False), ValueError, "q must have shape"),
        (lambda: OPS.qnt(X, torch.ones(3, 8, 8), 255.0, "identity", False), ValueError, "q must have shape"),
        (lambda: OPS.qnt(X, Q.double(), 255.0, "identity", False), TypeError, "float32"),
        (lambda: OPS.qnt(X.double(), Q, 255.0, "identity", False), TypeError, "x must be float32"),
        (lambda: OPS.qnt(X[0], Q, 255.0, "identity", False), ValueError, "x must have shape"),
        (lambda: OPS.qnt(X, Q, 0.0, "identity", False), ValueError, "scale must be positive"),
        (lambda: OPS.qnt(X, Q, 255.0, "round", False), ValueError, "surrogate must be one of"),
        (lambda: OPS.qnt_backward(X[:, :, :4], X, Q, 255.0, "cubic", False, True, True), ValueError, "grad_y must"),
        (lambda: OPS.qnt_backward(X.int(), X, Q, 255.0, "cubic", False, True, True), TypeError, "grad_y must be"),
        (lambda: OPS.qnt_rounding(X.double(), "identity"), TypeError, "u must be float32"),
    ],
)
def test_direct_op_calls_are_checked_in_cpp(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
