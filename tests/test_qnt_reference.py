"""The reference against the contract's formula: the ground truth must be right first."""

import math

import torch

from gcln_fast.reference import dct_matrix, qnt_coefficients, qnt_reference


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
                    s += block[n][k] * math.cos(i * math.pi * (2 * n + 1) / 16) * math.cos(j * math.pi * (2 * k + 1) / 16)
            out[i][j] = 0.25 * ci * cj * s
    return torch.tensor(out, dtype=torch.float64)


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(dtype=torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12, rtol=0)


def test_coefficients_match_equation_1():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 8, 8, generator=g)
    expected = _dct_by_formula((x[0, 0].double() * 255).tolist())
    got = qnt_coefficients(x)[0, 0, 0, 0].double()
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-5)


def test_constant_block_by_hand():
    # A constant block a = 0.5 * 255 has Z[0, 0] = 8a = 1020 and nothing else;
    # q = 7: round(1020 / 7) * 7 = 146 * 7 = 1022, so every pixel is 1022 / 8 / 255.
    x = torch.full((1, 1, 8, 8), 0.5)
    torch.testing.assert_close(qnt_reference(x, 7.0), torch.full_like(x, 1022 / 8 / 255))
    torch.testing.assert_close(qnt_reference(x, 10.0), x)  # 1020 / 10 is exact


def test_round_half_to_even():
    # Z[0, 0] = 8a: a = 2.5 * q / 8 puts Z / q exactly on 2.5, which rounds to 2.
    q = 8.0
    x = torch.full((1, 1, 8, 8), 2.5 / 255)
    torch.testing.assert_close(qnt_reference(x, q), torch.full_like(x, 2.0 / 255))


def test_tiny_step_is_identity():
    x = torch.rand(2, 3, 13, 21, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(qnt_reference(x, 1e-4), x, atol=1e-5, rtol=0)


def test_edge_blocks_replicate():
    # A 1x1 image is a constant 8x8 block after replication: q = 10 keeps 0.5 exactly.
    x = torch.full((1, 1, 1, 1), 0.5)
    torch.testing.assert_close(qnt_reference(x, 10.0), x)
    # Replication (not zero padding): a 3x5 constant image stays constant.
    x = torch.full((1, 1, 3, 5), 0.25)
    assert torch.allclose(qnt_reference(x, 1.0), x, atol=1e-6)


def test_per_channel_tables_apply_per_channel():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    q = torch.stack([torch.full((8, 8), v) for v in (1.0, 20.0, 60.0)])
    y = qnt_reference(x, q)
    for c, v in enumerate((1.0, 20.0, 60.0)):
        torch.testing.assert_close(y[:, c : c + 1], qnt_reference(x[:, c : c + 1], v))


def test_straight_through_and_lsq_gradients_by_hand():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    q = torch.tensor(9.0, requires_grad=True)
    gy = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    qnt_reference(x, q).backward(gy)
    torch.testing.assert_close(x.grad, gy)
    d = dct_matrix(dtype=torch.float64)
    z = d @ (x.detach()[0, 0].double() * 255) @ d.T
    g = d @ gy[0, 0].double() @ d.T
    t = z / 9.0
    expected = (g * (torch.round(t) - t)).sum() / 255
    torch.testing.assert_close(q.grad.double(), expected, atol=1e-5, rtol=1e-4)
