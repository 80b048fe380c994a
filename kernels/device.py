"""Device helpers shared by every Triton kernel form (``@triton.jit`` functions only).

The numbers come from :mod:`gcln_fast.qnt_constants` (the one place in Python; the
C++/CUDA kernels have the same ones in ``csrc/qnt_block.h``): the DCT matrix entries,
the rounding rule's grid and the sine surrogate's polynomials. :func:`round_tie` is the
contract's R(u) = rint(rint(512 u) / 512) (``docs/qnt-op.md``) with the same two exact
roundings as ``block::round_tie``, so it gives the same R(u) for every float32 ``u``,
compiled (libdevice's ``rint``) or under the interpreter (which has no extern calls: an
exact floor-based round-half-to-even).
"""

from __future__ import annotations

import math

import triton
import triton.language as tl
from triton.language.extra import libdevice

from gcln_fast.qnt_constants import COS_PI, HALF_COS, SIN_PI, TIE_GRID

# Surrogates as compile-time ints (the names' order in gcln_fast.qnt_constants.SURROGATES).
IDENTITY, CUBIC, SINE = 0, 1, 2

_HC0 = tl.constexpr(HALF_COS[0])
_HC1 = tl.constexpr(HALF_COS[1])
_HC2 = tl.constexpr(HALF_COS[2])
_HC3 = tl.constexpr(HALF_COS[3])
_HC4 = tl.constexpr(HALF_COS[4])
_HC5 = tl.constexpr(HALF_COS[5])
_HC6 = tl.constexpr(HALF_COS[6])
_HC7 = tl.constexpr(HALF_COS[7])
_TIE_GRID = tl.constexpr(TIE_GRID)
_INV_TIE_GRID = tl.constexpr(1.0 / TIE_GRID)  # a power of two: exact
_S0, _S1, _S2, _S3, _S4 = (tl.constexpr(c) for c in SIN_PI)
_C0, _C1, _C2, _C3, _C4, _C5 = (tl.constexpr(c) for c in COS_PI)
_INV_PI = tl.constexpr(1.0 / math.pi)


# --------------------------------------------------------------------------- the DCT matrix


@triton.jit
def dct_entry(k, n):
    """D[k, n] = c_k sqrt(2/8) cos(pi k (2n + 1) / 16) in float32, for integer tensors k, n."""
    m = (k * (2 * n + 1)) % 32
    m = tl.where(m > 16, 32 - m, m)  # cos(2 pi - a) = cos(a): m in [0, 16]
    neg = m > 8
    m = tl.where(neg, 16 - m, m)  # cos(pi - a) = -cos(a): m in [0, 8]
    v = tl.where(m == 0, _HC0, tl.where(m == 1, _HC1, tl.where(m == 2, _HC2, tl.where(m == 3, _HC3, 0.0))))
    v = tl.where(m == 4, _HC4, tl.where(m == 5, _HC5, tl.where(m == 6, _HC6, tl.where(m == 7, _HC7, v))))
    v = tl.where(neg, -v, v)
    v = tl.where(k == 0, _HC4, v)  # c_0 = 1/sqrt(2): D[0, n] = sqrt(1/8) = cos(pi/4) / 2
    return v.to(tl.float32)


# --------------------------------------------------------------------------- rounding and surrogates


@triton.jit
def rint(x, USE_LIBDEVICE: tl.constexpr):
    """Round half to even (``torch.round``)."""
    if USE_LIBDEVICE:
        r = libdevice.rint(x)
    else:
        f = tl.floor(x)
        d = x - f  # exact
        half_f = f * 0.5
        f_odd = (half_f - tl.floor(half_f)) != 0.0
        up = (d > 0.5) | ((d == 0.5) & f_odd)
        r = tl.where(up, f + 1.0, f)
    return r


@triton.jit
def round_tie(u, USE_LIBDEVICE: tl.constexpr):
    """R(u) = rint(rint(512 u) / 512), as block::round_tie: u goes to the nearest multiple of
    1/512 first, so a u within 2**-10 of a half-integer is a tie and goes to the even
    neighbour. Both scalings are exact, so this is R(u) for every float32 u."""
    return rint(rint(u * _TIE_GRID, USE_LIBDEVICE) * _INV_TIE_GRID, USE_LIBDEVICE)


@triton.jit
def sin_pi(t):
    """sin(pi t) for |t| <= 1/2 (Horner on t^2, the polynomial of gcln_fast.qnt_constants)."""
    t2 = t * t
    p = t2 * _S4 + _S3
    p = p * t2 + _S2
    p = p * t2 + _S1
    p = p * t2 + _S0
    return p * t


@triton.jit
def cos_pi(t):
    """cos(pi t) for |t| <= 1/2."""
    t2 = t * t
    p = t2 * _C5 + _C4
    p = p * t2 + _C3
    p = p * t2 + _C2
    p = p * t2 + _C1
    return p * t2 + _C0


@triton.jit
def surrogate_value(u, r, SURROGATE: tl.constexpr, USE_LIBDEVICE: tl.constexpr):
    """s(u) for r = R(u): identity R(u); cubic R + (u - R)^3; sine u - sin(2 pi u) / (2 pi),
    reduced exactly to t = u - rint(u)."""
    if SURROGATE == 0:
        v = r
    elif SURROGATE == 1:
        e = u - r
        v = e * e * e + r
    else:
        t = u - rint(u, USE_LIBDEVICE)
        v = (sin_pi(t) * cos_pi(t)) * (-_INV_PI) + u
    return v


@triton.jit
def surrogate_slope(u, r, SURROGATE: tl.constexpr, USE_LIBDEVICE: tl.constexpr):
    """s'(u) for r = R(u): identity 1; cubic 3 (u - R)^2; sine 1 - cos(2 pi u) = 2 sin(pi t)^2."""
    if SURROGATE == 0:
        d = tl.full(u.shape, 1.0, tl.float32)
    elif SURROGATE == 1:
        e = u - r
        d = (e * e) * 3.0
    else:
        sp = sin_pi(u - rint(u, USE_LIBDEVICE))
        d = (sp * sp) * 2.0
    return d


@triton.jit
def quantize(z, qv, SURROGATE: tl.constexpr, SOFT: tl.constexpr, USE_LIBDEVICE: tl.constexpr):
    """The forward's q * F(z / q): F = R, or the surrogate s when SOFT."""
    u = tl.math.div_rn(z, qv)
    r = round_tie(u, USE_LIBDEVICE)
    if SOFT:
        r = surrogate_value(u, r, SURROGATE, USE_LIBDEVICE)
    return r * qv


# --------------------------------------------------------------------------- tiles of blocks


@triton.jit
def block_coords(blk, CPG, Hb, Wb, n0, c0):
    """Block index inside a group -> (n, c, bh, bw) as int64. A group's blocks are samples
    n0, n0 + 1, ... and channels c0 .. c0 + CPG - 1, bw fastest."""
    blk = blk.to(tl.int64)
    bw = blk % Wb
    t = blk // Wb
    bh = t % Hb
    t = t // Hb
    c = c0 + t % CPG
    n = n0 + t // CPG
    return n, c, bh, bw


@triton.jit
def table_offset(n, c, QSN, QSC):
    """Offset of block (n, c)'s table in the canonical (Nq, Cq, 8, 8) table: table
    n * QSN + c * QSC (QSN = Cq if Nq > 1 else 0, QSC = 1 if Cq > 1 else 0)."""
    return (n * QSN + c * QSC) * 64


@triton.jit
def tile_index(tile, BLOCKS: tl.constexpr, SEP: tl.constexpr):
    """Block ids of a tile and the (row, col) inside the block, shaped for the form's tile:
    [BLOCKS, 8, 8] (separable) or [BLOCKS, 64] (dot)."""
    if SEP:
        blk = tile * BLOCKS + tl.arange(0, BLOCKS)[:, None, None]
        r = tl.arange(0, 8)[None, :, None]
        cc = tl.arange(0, 8)[None, None, :]
    else:
        blk = tile * BLOCKS + tl.arange(0, BLOCKS)[:, None]
        e = tl.arange(0, 64)[None, :]
        r = e // 8
        cc = e % 8
    return blk, r, cc


@triton.jit
def matrices(SEP: tl.constexpr):
    """(A, B): D and D^T (separable), or kron(D, D)^T and kron(D, D) (dot)."""
    if SEP:
        kk = tl.arange(0, 8)[:, None]
        nn = tl.arange(0, 8)[None, :]
        A = dct_entry(kk, nn)  # D[k, n]
        B = dct_entry(nn, kk)  # D^T[n, k]
    else:
        pix = tl.arange(0, 64)[:, None]
        coef = tl.arange(0, 64)[None, :]
        # A = kron(D, D)^T: A[pixel (n1, n2), coef (k1, k2)] = D[k1, n1] D[k2, n2]
        A = dct_entry(coef // 8, pix // 8) * dct_entry(coef % 8, pix % 8)
        # B = kron(D, D): B[coef, pixel]
        B = dct_entry(pix // 8, coef // 8) * dct_entry(pix % 8, coef % 8)
    return A, B


@triton.jit
def forward_transform(u, A, B, SEP: tl.constexpr, PRECISION: tl.constexpr):
    """Z = D U D^T per block of the tile."""
    if SEP:
        t = tl.sum(u[:, :, None, :] * A[None, None, :, :], axis=3)  # t[b, r, k2] = sum_c U[b, r, c] D[k2, c]
        z = tl.sum(A[None, :, :, None] * t[:, None, :, :], axis=2)  # Z[b, k1, k2] = sum_r D[k1, r] t[b, r, k2]
    else:
        z = tl.dot(u, A, input_precision=PRECISION)
    return z


@triton.jit
def inverse_transform(z, A, B, SEP: tl.constexpr, PRECISION: tl.constexpr):
    """V = D^T Z D per block of the tile."""
    if SEP:
        w = tl.sum(z[:, :, :, None] * A[None, None, :, :], axis=2)  # w[b, k1, c] = sum_k2 Z[b, k1, k2] D[k2, c]
        v = tl.sum(B[None, :, :, None] * w[:, None, :, :], axis=2)  # V[b, r, c] = sum_k1 D[k1, r] w[b, k1, c]
    else:
        v = tl.dot(z, B, input_precision=PRECISION)
    return v


@triton.jit
def fold_replicate(v, bh, bw, H, W, BLOCKS: tl.constexpr, SEP: tl.constexpr):
    """The adjoint of the replicate padding on a tile: rows (then columns) of each block past
    the image's last row (column) are added onto it, the corner onto both."""
    if SEP:
        b3 = v
        last_r = H - 1 - bh * 8  # [BLOCKS, 1, 1]
        last_c = W - 1 - bw * 8
    else:
        b3 = tl.reshape(v, (BLOCKS, 8, 8))
        last_r = tl.reshape(H - 1 - bh * 8, (BLOCKS, 1, 1))
        last_c = tl.reshape(W - 1 - bw * 8, (BLOCKS, 1, 1))
    r = tl.arange(0, 8)[None, :, None]
    cc = tl.arange(0, 8)[None, None, :]
    below = tl.sum(tl.where(r > last_r, b3, 0.0), axis=1)  # [BLOCKS, 8]: per column
    b3 = tl.where(r == last_r, b3 + below[:, None, :], b3)
    right = tl.sum(tl.where(cc > last_c, b3, 0.0), axis=2)  # [BLOCKS, 8]: per row
    b3 = tl.where(cc == last_c, b3 + right[:, :, None], b3)
    if SEP:
        out = b3
    else:
        out = tl.reshape(b3, (BLOCKS, 64))
    return out


@triton.jit
def load_tile_dct(
    x_ptr, tile, M, CPG, H, W, Hb, Wb, n0, c0, sxn, sxc, sxh, sxw, scale, A, B,
    BLOCKS: tl.constexpr, SEP: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Every kernel's start on a tile of a group: (valid, n, c, bh, bw, row, col, k, z), with
    ``row`` / ``col`` the pixel and ``k`` the coefficient index of each element, ``z`` the DCT of
    ``scale * x``."""
    blk, r, cc = tile_index(tile, BLOCKS, SEP)
    valid = blk < M
    n, c, bh, bw = block_coords(blk, CPG, Hb, Wb, n0, c0)
    row = bh * 8 + r
    col = bw * 8 + cc
    # Replicate the edges: clamp the load indices (padded pixels are computed, never stored).
    x_off = n * sxn + c * sxc + tl.minimum(row, H - 1) * sxh + tl.minimum(col, W - 1) * sxw
    u = tl.load(x_ptr + x_off, mask=valid, other=0.0).to(tl.float32) * scale
    z = forward_transform(u, A, B, SEP, PRECISION)
    return valid, n, c, bh, bw, row, col, r * 8 + cc, z


# --------------------------------------------------------------------------- per-block tensors (butterfly form)


@triton.jit
def split8(t):
    """[B, 8] -> eight [B] tensors (the columns)."""
    a = tl.reshape(t, (t.shape[0], 2, 2, 2))  # a[b, i, j, k] = t[b, 4 i + 2 j + k]
    e, o = tl.split(a)
    e0, e1 = tl.split(e)
    o0, o1 = tl.split(o)
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def join8(c0, c1, c2, c3, c4, c5, c6, c7):
    """Eight [B] tensors -> [B, 8] (the inverse of split8)."""
    e = tl.join(tl.join(c0, c4), tl.join(c2, c6))
    o = tl.join(tl.join(c1, c5), tl.join(c3, c7))
    return tl.reshape(tl.join(e, o), (c0.shape[0], 8))
