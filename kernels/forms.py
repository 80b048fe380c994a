"""The tile forms of the Triton QNT kernels: ``dot`` and ``separable`` (``SEP``).

A program handles TILES tiles of BLOCKS 8x8 blocks of one group; the forms differ only
in how a tile holds its blocks and transforms them (``kernels/device.py``):

- ``dot``: a tile is a [BLOCKS, 64] matrix (one row per block); the 2-D DCT is one
  product with the 64x64 matrix ``kron(D, D)^T`` (``tl.dot``, ``input_precision="ieee"``
  by default: fp32-accurate, since a coefficient near a rounding boundary is sensitive
  to round-off; ``"tf32x3"`` selectable for the tensor cores), the inverse one with
  ``kron(D, D)``.
- ``separable``: a tile is [BLOCKS, 8, 8] and the DCT is two 8-point matrix products
  along each axis in registers (broadcast multiply + sum), 4x fewer multiply-adds.

Groups: the forward runs one group (every block). The backward runs one group per q
table when grad_q is wanted, so that a program's partial sums belong to one table
(per-sample tables: each image's blocks only), else one group.

Sizes and all strides but the innermost are not specialized on (fewer compiles: the
dot form takes tens of seconds per compile, not measured here).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .device import (
    fold_replicate,
    forward_transform,
    inverse_transform,
    load_tile_dct,
    matrices,
    quantize,
    round_tie,
    surrogate_slope,
    surrogate_value,
    table_offset,
)

_NOT_SPECIALIZED = ["M", "C", "CPG", "H", "W", "Hb", "Wb", "QSN", "QSC", "GCQ", "GN1", "GC1"]


@triton.jit(do_not_specialize=_NOT_SPECIALIZED + ["sxn", "sxc", "sxh", "syn", "syc", "syh"])
def qnt_fwd_kernel(
    x_ptr, y_ptr, q_ptr,
    M, C, H, W, Hb, Wb, QSN, QSC,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    scale, inv_scale,
    SURROGATE: tl.constexpr, SOFT: tl.constexpr,
    SEP: tl.constexpr, PRECISION: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
    BLOCKS: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    A, B = matrices(SEP)
    pid = tl.program_id(0)
    for i in range(TILES):
        valid, n, c, bh, bw, row, col, k, z = load_tile_dct(
            x_ptr, pid * TILES + i, M, C, H, W, Hb, Wb, 0, 0, sxn, sxc, sxh, sxw, scale, A, B, BLOCKS, SEP, PRECISION
        )
        # Loaded with the tile's mask, q is a full tile in the tile's layout, also when
        # shared (a broadcast [1, 64] / [1, 8, 8] q would leave the quantization in the
        # separable form's replicated reduction layout: 8x the divisions).
        qv = tl.load(q_ptr + table_offset(n, c, QSN, QSC) + k, mask=valid, other=1.0)
        v = inverse_transform(quantize(z, qv, SURROGATE, SOFT, USE_LIBDEVICE), A, B, SEP, PRECISION)
        y = (v * inv_scale).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + n * syn + c * syc + row * syh + col * syw, y, mask=valid & (row < H) & (col < W))


@triton.jit(do_not_specialize=_NOT_SPECIALIZED + ["sgn", "sgc", "sgh", "sxn", "sxc", "sxh", "sdn", "sdc", "sdh"])
def qnt_bwd_kernel(
    gy_ptr, x_ptr, q_ptr, gx_ptr, part_ptr,
    M, CPG, H, W, Hb, Wb, QSN, QSC, GCQ, GN1, GC1,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    sdn, sdc, sdh, sdw,
    scale, part_stride_g,
    SURROGATE: tl.constexpr, NEED_GX: tl.constexpr, NEED_GQ: tl.constexpr,
    SEP: tl.constexpr, PRECISION: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
    BLOCKS: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    """One pass over x and grad_y: grad_x = D^T (s'(u) G) D folded onto the image (NEED_GX), and
    partials[g, pid, k] = sum over this program's blocks of group g of G (s(u) - u s'(u)) (NEED_GQ).
    Group g covers samples from n0 = (g // GCQ) * GN1 and channels from c0 = (g % GCQ) * GC1."""
    A, B = matrices(SEP)
    pid = tl.program_id(0)
    g = tl.program_id(1)
    n0 = (g // GCQ) * GN1
    c0 = (g % GCQ) * GC1
    if SEP:
        acc = tl.zeros((8, 8), dtype=tl.float32)
    else:
        acc = tl.zeros((64,), dtype=tl.float32)
    for i in range(TILES):
        valid, n, c, bh, bw, row, col, k, z = load_tile_dct(
            x_ptr, pid * TILES + i, M, CPG, H, W, Hb, Wb, n0, c0, sxn, sxc, sxh, sxw, scale, A, B,
            BLOCKS, SEP, PRECISION,
        )  # fmt: skip
        qv = tl.load(q_ptr + table_offset(n, c, QSN, QSC) + k, mask=valid, other=1.0)
        u = tl.math.div_rn(z, qv)
        r = round_tie(u, USE_LIBDEVICE)
        slope = surrogate_slope(u, r, SURROGATE, USE_LIBDEVICE)
        # grad_y's partial edge blocks are zero padded (the adjoint of the crop).
        inside = valid & (row < H) & (col < W)
        gyv = tl.load(gy_ptr + n * sgn + c * sgc + row * sgh + col * sgw, mask=inside, other=0.0).to(tl.float32)
        gz = forward_transform(gyv, A, B, SEP, PRECISION)
        if NEED_GQ:
            term = gz * (surrogate_value(u, r, SURROGATE, USE_LIBDEVICE) - u * slope)
            acc += tl.sum(tl.where(valid, term, 0.0), axis=0)
        if NEED_GX:
            v = fold_replicate(inverse_transform(slope * gz, A, B, SEP, PRECISION), bh, bw, H, W, BLOCKS, SEP)
            tl.store(gx_ptr + n * sdn + c * sdc + row * sdh + col * sdw, v.to(gx_ptr.dtype.element_ty), mask=inside)
    if NEED_GQ:
        if SEP:
            out_k = tl.arange(0, 8)[:, None] * 8 + tl.arange(0, 8)[None, :]
        else:
            out_k = tl.arange(0, 64)
        tl.store(part_ptr + g * part_stride_g + pid * 64 + out_k, acc)
