"""The reference against the contract (docs/qnt-op.md): the ground truth must be right first."""

import math

import pytest
import torch

from gcln_fast.qnt_constants import TIE_HALF_WIDTH
from gcln_fast.reference import (
    dct_matrix,
    qnt_coefficients,
    qnt_reference,
    round_tie,
    surrogate_slope,
    surrogate_value,
)

from helpers import SURROGATES, rand, randn


def _dct_by_formula(block):
    """Equation (1) of the paper for M = 8, written out with math.cos (independent of dct_matrix)."""
    out = [[0.0] * 8 for _ in range(8)]
    for i in range(8):
        for j in range(8):
            ci = 1 / math.sqrt(2) if i == 0 else 1.0
            cj = 1 / math.sqrt(2) if j == 0 else 1.0
            s = 0.0
            for n in range(8):
                for k in range(8):
                    s += (
                        block[n][k]
                        * math.cos(i * math.pi * (2 * n + 1) / 16)
                        * math.cos(j * math.pi * (2 * k + 1) / 16)
                    )
            out[i][j] = 0.25 * ci * cj * s
    return torch.tensor(out, dtype=torch.float64)


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(dtype=torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12, rtol=0)


def test_coefficients_match_equation_1():
    x = rand((1, 1, 8, 8))
    expected = _dct_by_formula((x[0, 0].double() * 255).tolist())
    got = qnt_coefficients(x)[0, 0, 0, 0].double()
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(qnt_coefficients(x.double())[0, 0, 0, 0], expected, atol=1e-9, rtol=1e-12)


def test_constant_block_by_hand():
    # A constant block a = 0.5 * 255 has Z[0, 0] = 8a = 1020 and nothing else;
    # q = 7: R(1020 / 7) * 7 = 146 * 7 = 1022, so every pixel is 1022 / 8 / 255.
    x = torch.full((1, 1, 8, 8), 0.5)
    torch.testing.assert_close(qnt_reference(x, 7.0), torch.full_like(x, 1022 / 8 / 255))
    torch.testing.assert_close(qnt_reference(x, 10.0), x)  # 1020 / 10 is exact


# --------------------------------------------------------------------------- the rounding rule


@pytest.mark.parametrize(
    "u,expected",
    [
        (2.5, 2.0),
        (3.5, 4.0),
        (-2.5, -2.0),
        (0.5, 0.0),
        (2.5 + 9.7e-4, 2.0),  # inside the window: 2**-10 = 9.77e-4
        (2.5 + 9.9e-4, 3.0),  # outside
        (3.5 - 9.7e-4, 4.0),
        (0.5 + 9.7e-4, 0.0),
        (0.5 + 9.9e-4, 1.0),
        (-0.5 - 9.7e-4, 0.0),
        (1000.5 + 9.7e-4, 1000.0),
        (1000.5 + 1.1e-3, 1001.0),
        (101.5 - 9.7e-4, 102.0),
        (2.3, 2.0),
        (-2.7, -3.0),
        (40001.0, 40001.0),
        (40001.5, 40002.0),
        (2.0**14 + 0.5 + 2.0**-9, 16385.0),  # float32 spacing 2**-9 here: only exact halves tie
    ],
)
def test_round_tie_by_hand(u, expected):
    for dtype in (torch.float64, torch.float32):
        assert round_tie(torch.tensor(u, dtype=dtype)).item() == expected, dtype


def test_round_tie_window_edges_are_inclusive():
    for dtype in (torch.float64, torch.float32):
        u = torch.tensor([10.5], dtype=dtype)
        assert round_tie(u + TIE_HALF_WIDTH).item() == 10.0  # on the edge: a tie, to even
        assert round_tie(u - TIE_HALF_WIDTH).item() == 10.0
        outside = torch.nextafter(u + TIE_HALF_WIDTH, torch.tensor([11.0], dtype=dtype))  # the next float
        assert round_tie(outside).item() == 11.0  # just outside: nearest


def test_round_tie_is_exact_in_float32():
    """The rule evaluated in float32 equals the rule evaluated in float64 on the same float32 u."""
    g = torch.Generator().manual_seed(0)
    k = torch.randint(-3000, 3000, (200_000,), generator=g).double() + 0.5
    tau = torch.full((200_000,), TIE_HALF_WIDTH, dtype=torch.float64)
    # Around half-integers and both edges of the window.
    offsets = torch.cat([torch.randn(200_000, generator=g).double() * tau * 2, tau, -tau, tau * 1.0000001])
    u = (torch.cat([k, k, k, k]) + offsets).float()
    u = torch.cat([u, torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 2.0**23 + 1, 2.0**24])])
    r32, r64 = round_tie(u), round_tie(u.double())
    same = (r32.double() == r64) | (r32.isnan() & r64.isnan())
    assert bool(same.all()), u[~same][:5]


def test_round_half_to_even_on_a_block():
    # Z[0, 0] = 8a: a = 2.5 * q / 8 puts Z / q on 2.5, which goes to 2.
    x = torch.full((1, 1, 8, 8), 2.5 / 255)
    torch.testing.assert_close(qnt_reference(x, 8.0), torch.full_like(x, 2.0 / 255))


def test_float64_input_is_float64_math():
    x = torch.full((1, 1, 8, 8), 2.5 / 255, dtype=torch.float64) + 1e-9
    y = qnt_reference(x, 8.0)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, torch.full_like(x, 2.0 / 255), atol=1e-15, rtol=0)


def test_tiny_step_is_identity():
    x = rand((2, 3, 13, 21), seed=1)
    torch.testing.assert_close(qnt_reference(x, 1e-4), x, atol=1e-5, rtol=0)


def test_edge_blocks_replicate():
    # A 1x1 image is a constant 8x8 block after replication: q = 10 keeps 0.5 exactly.
    x = torch.full((1, 1, 1, 1), 0.5)
    torch.testing.assert_close(qnt_reference(x, 10.0), x)
    # Replication (not zero padding): a 3x5 constant image stays constant.
    x = torch.full((1, 1, 3, 5), 0.25)
    assert torch.allclose(qnt_reference(x, 1.0), x, atol=1e-6)


# --------------------------------------------------------------------------- tables


def test_per_channel_tables_apply_per_channel():
    x = rand((2, 3, 16, 16), seed=2)
    q = torch.stack([torch.full((8, 8), v) for v in (1.0, 20.0, 60.0)])
    y = qnt_reference(x, q)
    for c, v in enumerate((1.0, 20.0, 60.0)):
        torch.testing.assert_close(y[:, c : c + 1], qnt_reference(x[:, c : c + 1], v))


@pytest.mark.parametrize("per_channel", [False, True])
def test_per_sample_tables_apply_per_sample(per_channel):
    x = rand((3, 2, 12, 20), seed=3)
    q = torch.rand(3, 2 if per_channel else 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 30 + 2
    y = qnt_reference(x, q)
    for n in range(3):
        own = q[n] if per_channel else q[n, 0]
        torch.testing.assert_close(y[n : n + 1], qnt_reference(x[n : n + 1], own))


def test_per_sample_grad_q_sums_over_its_own_image_only():
    x, gy = rand((3, 2, 12, 20), seed=5), randn((3, 2, 12, 20), seed=6)
    q = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7)) * 30 + 2).requires_grad_()
    qnt_reference(x, q, surrogate="cubic").backward(gy)
    for n in range(3):
        qn = q[n, 0].detach().clone().requires_grad_()
        qnt_reference(x[n : n + 1], qn, surrogate="cubic").backward(gy[n : n + 1])
        torch.testing.assert_close(q.grad[n, 0], qn.grad)


# --------------------------------------------------------------------------- surrogates


def test_surrogate_values_and_slopes_by_hand():
    u = torch.tensor([2.3, -1.2, 0.5, 7.75], dtype=torch.float64)
    r = torch.tensor([2.0, -1.0, 0.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(surrogate_value(u, "identity"), r)
    torch.testing.assert_close(surrogate_slope(u, "identity"), torch.ones_like(u))
    torch.testing.assert_close(surrogate_value(u, "cubic"), r + (u - r) ** 3)
    torch.testing.assert_close(surrogate_slope(u, "cubic"), 3 * (u - r) ** 2)
    torch.testing.assert_close(surrogate_value(u, "sine"), u - torch.sin(2 * math.pi * u) / (2 * math.pi))
    torch.testing.assert_close(surrogate_slope(u, "sine"), 1 - torch.cos(2 * math.pi * u))


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_hard_forward_does_not_depend_on_the_surrogate(surrogate):
    x = rand((2, 3, 11, 13), seed=8)
    assert torch.equal(qnt_reference(x, 7.0, surrogate=surrogate), qnt_reference(x, 7.0))


def test_soft_forward_uses_the_surrogate():
    x = rand((1, 1, 8, 8), seed=9, dtype=torch.float64)
    assert torch.equal(qnt_reference(x, 7.0, surrogate="identity", soft_forward=True), qnt_reference(x, 7.0))
    d = dct_matrix(dtype=torch.float64)
    u = d @ (x[0, 0] * 255) @ d.T / 7.0
    for name in ("cubic", "sine"):
        expected = d.T @ (7.0 * surrogate_value(u, name)) @ d / 255
        torch.testing.assert_close(qnt_reference(x, 7.0, surrogate=name, soft_forward=True)[0, 0], expected)


@pytest.mark.parametrize("surrogate", ["cubic", "sine"])
@pytest.mark.parametrize("q_form", ["scalar", "sample"])
def test_backward_is_the_derivative_of_the_soft_forward(surrogate, q_form):
    """gradcheck in float64: the contract's grad_x (with the replicate adjoint) and grad_q are the
    true derivatives of y = D^T (q s(Z / q)) D / scale, on partial edge blocks too."""
    x = rand((2, 2, 9, 11), dtype=torch.float64, seed=10).requires_grad_()
    q = (
        torch.tensor(9.0, dtype=torch.float64)
        if q_form == "scalar"
        else torch.rand(2, 2, 8, 8, dtype=torch.float64) * 20 + 3
    )
    q.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, q: qnt_reference(x, q, surrogate=surrogate, soft_forward=True), (x, q), eps=1e-7, atol=1e-6, rtol=1e-4
    )


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_hard_and_soft_forward_share_the_backward(surrogate):
    x, gy = rand((2, 3, 9, 14), seed=11), randn((2, 3, 9, 14), seed=12)
    grads = []
    for soft in (False, True):
        xs = x.clone().requires_grad_()
        q = torch.full((3, 8, 8), 6.0, requires_grad=True)
        qnt_reference(xs, q, surrogate=surrogate, soft_forward=soft).backward(gy)
        grads.append((xs.grad, q.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=0, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=0, rtol=0)


def test_identity_backward_by_hand():
    x = rand((1, 1, 8, 8), seed=3).requires_grad_()
    q = torch.tensor(9.0, requires_grad=True)
    gy = randn((1, 1, 8, 8), seed=4)
    qnt_reference(x, q).backward(gy)
    torch.testing.assert_close(x.grad, gy, atol=1e-6, rtol=0)
    d = dct_matrix(dtype=torch.float64)
    z = d @ (x.detach()[0, 0].double() * 255) @ d.T
    g = d @ gy[0, 0].double() @ d.T
    t = z / 9.0
    expected = (g * (torch.round(t) - t)).sum() / 255
    torch.testing.assert_close(q.grad.double(), expected, atol=1e-5, rtol=1e-4)


def test_replicate_adjoint_by_hand():
    """A 2x3 image: grad_x[i, j] collects B over every padded position that replicates (i, j)."""
    x = rand((1, 1, 2, 3), dtype=torch.float64, seed=13).requires_grad_()
    gy = randn((1, 1, 2, 3), dtype=torch.float64, seed=14)
    qnt_reference(x, 5.0, surrogate="cubic").backward(gy)
    d = dct_matrix(dtype=torch.float64)
    u = torch.nn.functional.pad(x.detach() * 255, (0, 5, 0, 6), mode="replicate")[0, 0]
    g = torch.nn.functional.pad(gy, (0, 5, 0, 6))[0, 0]
    b = d.T @ (surrogate_slope(d @ u @ d.T / 5.0, "cubic") * (d @ g @ d.T)) @ d
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for i in range(8):
        for j in range(8):
            expected[min(i, 1), min(j, 2)] += b[i, j]
    torch.testing.assert_close(x.grad[0, 0], expected)
