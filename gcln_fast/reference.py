"""Readable pure-PyTorch reference of the QNT op (``docs/qnt-op.md``).

Every fast backend is tested against this file. It runs on any device and in
any floating dtype (float64 input -> float64 math: the ground truth of the tie
test), and autograd through it gives exactly the contract's backward for every
surrogate: the quantizer is one small autograd.Function with the contract's
formulas, and autograd of the transforms, the replicate padding and the crop
supplies the rest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _validate
from .qnt_constants import BLOCK, TIE_GRID, dct_rows


def dct_matrix(device=None, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal 8x8 DCT-II matrix ``D[k, n] = c_k sqrt(2/8) cos(pi k (2n+1) / 16)``."""
    return torch.tensor(dct_rows(), dtype=torch.float64).to(device=device, dtype=dtype)


def round_tie(u: torch.Tensor) -> torch.Tensor:
    """``R(u) = rint(rint(512 u) / 512)``: ``u`` goes to the nearest multiple of 1/512, then to the
    nearest integer (both ties to even), so a ``u`` within 2**-10 of a half-integer is a tie and
    goes to the even neighbour. Every step is exact in any float dtype (scaling by a power of two)."""
    return torch.round(torch.round(u * TIE_GRID) / TIE_GRID)


def surrogate_value(u: torch.Tensor, surrogate: str) -> torch.Tensor:
    """``s(u)`` of the named surrogate (identity: ``R(u)``)."""
    if surrogate == "sine":
        return u - torch.sin(2 * math.pi * u) / (2 * math.pi)
    r = round_tie(u)
    return r + (u - r) ** 3 if surrogate == "cubic" else r


def surrogate_slope(u: torch.Tensor, surrogate: str) -> torch.Tensor:
    """``s'(u)`` of the named surrogate (identity: 1)."""
    if surrogate == "sine":
        return 1 - torch.cos(2 * math.pi * u)
    if surrogate == "cubic":
        return 3 * (u - round_tie(u)) ** 2
    return torch.ones_like(u)


class _Quantize(torch.autograd.Function):
    """``q * F(z / q)`` with ``F = R`` (or ``s`` when soft), differentiated as ``q * s(z / q)``."""

    @staticmethod
    def forward(ctx, z, q, surrogate, soft_forward):
        ctx.surrogate = surrogate
        ctx.save_for_backward(z, q)
        u = z / q
        return q * (surrogate_value(u, surrogate) if soft_forward else round_tie(u))

    @staticmethod
    def backward(ctx, grad):
        z, q = ctx.saved_tensors
        u = z / q
        slope = surrogate_slope(u, ctx.surrogate)
        grad_z = grad * slope
        grad_q = (grad * (surrogate_value(u, ctx.surrogate) - u * slope)).sum_to_size(q.shape)
        return grad_z, grad_q, None, None


def _to_blocks(u: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, Hb, Wb, 8, 8), the partial edge blocks completed by replicating the
    edge (the forward) or with zeros (the adjoint of the crop, for gradients)."""
    h, w = u.shape[-2:]
    ph, pw = (-h) % BLOCK, (-w) % BLOCK
    if ph or pw:
        u = F.pad(u, (0, pw, 0, ph), mode=mode)
    n, c, hp, wp = u.shape
    return u.reshape(n, c, hp // BLOCK, BLOCK, wp // BLOCK, BLOCK).transpose(3, 4)


def _from_blocks(blocks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hb, wb = blocks.shape[:4]
    u = blocks.transpose(3, 4).reshape(n, c, hb * BLOCK, wb * BLOCK)
    return u[..., :h, :w]


def qnt_reference(
    x: torch.Tensor, q=10.0, scale: float = 255.0, *, surrogate: str = "identity", soft_forward: bool = False
) -> torch.Tensor:
    """Blockwise 8x8 DCT -> ``q * R(Z / q)`` -> inverse DCT (``docs/qnt-op.md``).

    Args:
        x: (N, C, H, W) float tensor (float64 too); any H, W (edge blocks are
            completed by replicating the last row/column and cropped away).
        q: quantization step in units of ``x * scale``: a number or 0-d tensor,
            an (8, 8), (C, 8, 8) or per-sample (N, 1 or C, 8, 8) table.
        scale: multiplier applied before the transform (255 = 8-bit pixel units
            for [0, 1] images).
        surrogate: ``"identity"``, ``"cubic"`` or ``"sine"``: the rounding
            surrogate ``s`` whose slope the backward uses.
        soft_forward: use ``s`` instead of ``R`` in the forward pass too.

    Returns:
        (N, C, H, W) tensor of ``x``'s dtype, computed in float32 (float64 for
        float64 input). Autograd gives the contract's ``grad_x`` and ``grad_q``.
    """
    _validate.check_x(x, allow_float64=True)
    scale = _validate.check_scale(scale)
    surrogate = _validate.check_surrogate(surrogate)
    soft_forward = _validate.check_soft_forward(soft_forward)
    table = _validate.canonical_q(q, x, scale, _math_dtype(x))
    return qnt_reference_table(x, table, scale, surrogate, soft_forward)


def _math_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def qnt_reference_table(
    x: torch.Tensor, table: torch.Tensor, scale: float, surrogate: str = "identity", soft_forward: bool = False
) -> torch.Tensor:
    """:func:`qnt_reference` on already validated arguments and a canonical (Nq, Cq, 8, 8) table."""
    if x.numel() == 0:
        return x.clone()
    dtype = _math_dtype(x)
    d = dct_matrix(x.device, dtype)
    z = d @ _to_blocks(x.to(dtype) * scale) @ d.T
    zq = _Quantize.apply(z, table.to(dtype)[:, :, None, None], surrogate, soft_forward)
    v = d.T @ zq @ d
    # In x's dtype and memory format, like every kernel's output.
    return torch.empty_like(x).copy_(_from_blocks(v, *x.shape[-2:]) / scale)


def qnt_reference_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    table: torch.Tensor,
    scale: float,
    surrogate: str,
    need_grad_x: bool = True,
    need_grad_q: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The contract's backward written out (what autograd through :func:`qnt_reference` gives):
    ``(grad_x, grad_q)``, each None when not needed; ``table`` canonical (Nq, Cq, 8, 8)."""
    if x.numel() == 0:
        return (torch.zeros_like(x) if need_grad_x else None), (torch.zeros_like(table) if need_grad_q else None)
    dtype = _math_dtype(x)
    d = dct_matrix(x.device, dtype)
    qb = table.to(dtype)[:, :, None, None]
    u = d @ _to_blocks(x.to(dtype) * scale) @ d.T / qb
    g = d @ _to_blocks(grad_y.to(dtype), "constant") @ d.T
    slope = surrogate_slope(u, surrogate)
    grad_q = grad_x = None
    if need_grad_q:
        terms = g * (surrogate_value(u, surrogate) - u * slope)
        grad_q = (terms.sum((2, 3)).sum_to_size(table.shape) / scale).to(table.dtype)
    if need_grad_x:
        h, w = x.shape[-2:]
        blocks = d.T @ (slope * g) @ d
        b = _from_blocks(blocks, blocks.shape[2] * BLOCK, blocks.shape[3] * BLOCK)  # the padded planes
        # The adjoint of the replicate padding: padded rows/columns add onto the last in-image one.
        b[..., h - 1, :] += b[..., h:, :].sum(-2)
        b[..., :, w - 1] += b[..., :, w:].sum(-1)
        grad_x = torch.empty_like(x).copy_(b[..., :h, :w])
    return grad_x, grad_q


def qnt_coefficients(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """The forward DCT coefficients of ``x * scale`` as (N, C, Hb, Wb, 8, 8), float32 (float64 for float64 x)."""
    d = dct_matrix(x.device, _math_dtype(x))
    return d @ _to_blocks(x.to(d.dtype) * scale) @ d.T
