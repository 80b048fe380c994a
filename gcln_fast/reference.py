"""Readable pure-PyTorch reference of the QNT op (``shared/design/qnt-op.md``).

Every fast backend is tested against this file; it runs on any device and is
differentiable with the straight-through estimator, so autograd through it is
the ground truth for ``grad_x`` and the step-size gradient ``grad_q``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLOCK = 8


def dct_matrix(device=None, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal 8x8 DCT-II matrix ``D`` with ``D[k, n] = c_k sqrt(2/8) cos(pi k (2n+1) / 16)``."""
    k = torch.arange(BLOCK, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(BLOCK, dtype=torch.float64).unsqueeze(0)
    d = math.sqrt(2.0 / BLOCK) * torch.cos(math.pi * k * (2 * n + 1) / (2 * BLOCK))
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def round_ste(t: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass."""
    return t + (torch.round(t) - t).detach()


def _to_blocks(u: torch.Tensor, mode: str) -> tuple[torch.Tensor, int, int]:
    """(N, C, H, W) -> (N, C, Hb, Wb, 8, 8), padding the partial edge blocks."""
    h, w = u.shape[-2:]
    ph, pw = (-h) % BLOCK, (-w) % BLOCK
    if ph or pw:
        if mode == "replicate":
            u = F.pad(u, (0, pw, 0, ph), mode="replicate")
        else:
            u = F.pad(u, (0, pw, 0, ph))
    n, c, hp, wp = u.shape
    blocks = u.reshape(n, c, hp // BLOCK, BLOCK, wp // BLOCK, BLOCK).transpose(3, 4)
    return blocks, h, w


def _from_blocks(blocks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hb, wb = blocks.shape[:4]
    u = blocks.transpose(3, 4).reshape(n, c, hb * BLOCK, wb * BLOCK)
    return u[..., :h, :w]


def _q_table(q, channels: int, device) -> torch.Tensor:
    """Any accepted form of ``q`` as a float32 tensor broadcastable to (1, C, 1, 1, 8, 8)."""
    q = torch.as_tensor(q, dtype=torch.float32, device=device)
    if q.dim() == 0:
        return q.reshape(1, 1, 1, 1, 1, 1)
    if q.dim() == 2:
        return q.reshape(1, 1, 1, 1, BLOCK, BLOCK)
    return q.reshape(1, channels, 1, 1, BLOCK, BLOCK)


def qnt_reference(x: torch.Tensor, q=10.0, scale: float = 255.0) -> torch.Tensor:
    """Blockwise 8x8 DCT -> ``round(Z / q) * q`` -> inverse DCT, in float32.

    Args:
        x: (N, C, H, W) float tensor; any H, W (edge blocks are completed by
            replicating the last row/column and the padding is cropped away).
        q: quantization step in units of ``x * scale``: a number or 0-d tensor,
            an (8, 8) per-frequency table or a (C, 8, 8) per-channel table.
        scale: multiplier applied before the transform (255 = 8-bit pixel units
            for [0, 1] images).

    Returns:
        (N, C, H, W) tensor of ``x``'s dtype. Differentiable: ``grad_x`` is the
        straight-through gradient and ``grad_q`` the LSQ step-size gradient.
    """
    d = dct_matrix(x.device)
    u = x.to(torch.float32) * scale
    blocks, h, w = _to_blocks(u, "replicate")
    z = d @ blocks @ d.T
    qt = _q_table(q, x.shape[1], x.device)
    zq = round_ste(z / qt) * qt
    v = d.T @ zq @ d
    return (_from_blocks(v, h, w) / scale).to(x.dtype)


def qnt_coefficients(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """The forward DCT coefficients of ``x * scale`` as (N, C, Hb, Wb, 8, 8) float32."""
    d = dct_matrix(x.device)
    blocks, _, _ = _to_blocks(x.to(torch.float32) * scale, "replicate")
    return d @ blocks @ d.T
