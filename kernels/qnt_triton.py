"""Triton kernels of the QNT op (``docs/qnt-op.md``) and their ``torch.library`` ops.

Ops (registered with :func:`torch.library.triton_op`, so ``torch.compile`` traces
into the kernels; autograd is registered by ``gcln_fast/ops.py``):

- ``gcln_fast::qnt_triton(Tensor x, Tensor q, float scale) -> Tensor``
- ``gcln_fast::qnt_grad_q_triton(Tensor grad_y, Tensor x, Tensor q, float scale) -> Tensor``

``q`` is the canonical float32 contiguous (Cq, 8, 8) table, Cq = 1 or C.

Kernel forms (the ``variant`` argument of :func:`launch_qnt` / :func:`launch_grad_q`;
the ops use ``DEFAULT_VARIANT``):

- ``"dot"``: a tile of BLOCKS blocks is a [BLOCKS, 64] matrix (one row per 8x8
  block); the 2-D DCT is one product with the 64x64 matrix ``kron(D, D)^T``
  (``tl.dot``, ``input_precision="ieee"`` by default: fp32-accurate, since a
  coefficient near a rounding boundary is sensitive to round-off; ``"tf32x3"``
  selectable for the tensor cores), the inverse one product with ``kron(D, D)``.
- ``"separable"``: the tile is [BLOCKS, 8, 8] and the DCT is done as two 8-point
  matrix products along each axis in registers (broadcast multiply + sum),
  4x fewer multiply-adds than the Kronecker form.
- ``"butterfly"``: one thread holds whole 8x8 blocks (block rows loaded as
  [BLOCKS, 8] tiles and split into 64 tensors of one element per block;
  generated straight-line code) and runs even/odd DCT butterflies with constant
  coefficients along rows and columns: the fewest operations.

``D`` is built inside the kernels from exact constants (no tensor argument, so
nothing has to be cached across ``torch.compile`` tracing). Round half to even
is ``libdevice.rint`` when compiled and an equivalent floor-based formula under
the interpreter (which has no extern calls); ``Z / q`` is the correctly rounded
division ``div_rn`` like ``torch``'s.

Sizes and all strides but the innermost are not specialized on (fewer compiles:
the dot and butterfly forms take tens of seconds each). Under
``TRITON_INTERPRET=1`` (CPU tensors, tests) every kernel has a single autotune
config. Importing this module raises ImportError where Triton is absent.
"""

from __future__ import annotations

import linecache
import math
import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"gcln_fast.kernels.qnt_triton needs Triton: {exc}") from exc

from torch.library import triton_op, wrap_triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

VARIANTS = ("dot", "separable", "butterfly")
# The form the ops use; GCLN_FAST_TRITON_VARIANT overrides it (for benchmarks).
# NOT measured on a GPU yet (bench/bench_triton_variants.py does that). Chosen
# from compiling each for sm_90 without a GPU (ptxas register/spill report):
# - "dot" (ieee): FMA-unit dot with both 64x64 operands per thread: 255 registers
#   and 0.7-4 KB of spills per thread in every config; tf32x3 uses the tensor
#   cores but still spills ~2.5 KB; 10-60 s per compile.
# - "separable": 168-181 registers, no spills, a few seconds per compile; but
#   only 8 pixels per thread, so few bytes in flight per SM.
# - "butterfly": 36 instead of 64 operations per 8-point transform, 64 pixels
#   per thread (many bytes in flight), 255 registers with ~100 B of spills,
#   ~10 s per compile; likely the fastest, to be confirmed by the benchmark.
# "separable" is the default until the benchmark says otherwise: plain
# module-level kernels (no generated source) and quick compiles.
DEFAULT_VARIANT = os.environ.get("GCLN_FAST_TRITON_VARIANT", "separable")
DOT_PRECISIONS = ("ieee", "tf32x3")
DEFAULT_DOT_PRECISION = "ieee"


# --------------------------------------------------------------------------- device helpers


@triton.jit
def _dct_entry(k, n):
    """D[k, n] = c_k sqrt(2/8) cos(pi k (2n + 1) / 16) in float32, for integer tensors k, n."""
    m = (k * (2 * n + 1)) % 32
    m = tl.where(m > 16, 32 - m, m)  # cos(2 pi - a) = cos(a): m in [0, 16]
    neg = m > 8
    m = tl.where(neg, 16 - m, m)  # cos(pi - a) = -cos(a): m in [0, 8]
    v = tl.where(
        m == 0,
        0.5,
        tl.where(
            m == 1,
            0.4903926402016152,
            tl.where(
                m == 2,
                0.46193976625564337,
                tl.where(
                    m == 3,
                    0.4157348061512726,
                    tl.where(
                        m == 4,
                        0.3535533905932738,
                        tl.where(
                            m == 5,
                            0.27778511650980114,
                            tl.where(m == 6, 0.19134171618254492, tl.where(m == 7, 0.09754516100806417, 0.0)),
                        ),
                    ),
                ),
            ),
        ),
    )
    v = tl.where(neg, -v, v)
    v = tl.where(k == 0, 0.3535533905932738, v)  # c_0 = 1/sqrt(2): D[0, n] = sqrt(1/8)
    return v.to(tl.float32)


@triton.jit
def _rint(x, USE_LIBDEVICE: tl.constexpr):
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
def _block_coords(blk, CPG, Hb, Wb, g):
    """Block index inside a group -> (n, c, bh, bw) as int64; channel c = g * CPG + c_local."""
    blk = blk.to(tl.int64)
    bw = blk % Wb
    t = blk // Wb
    bh = t % Hb
    t = t // Hb
    c = g * CPG + t % CPG
    n = t // CPG
    return n, c, bh, bw


@triton.jit
def _sep_dct(u, D, DT):
    """Per block Z = D U D^T for a [B, 8, 8] tile (two 8-point products in registers)."""
    t = tl.sum(u[:, :, None, :] * D[None, None, :, :], axis=3)  # t[b, r, k2] = sum_c U[b, r, c] D[k2, c]
    return tl.sum(D[None, :, :, None] * t[:, None, :, :], axis=2)  # Z[b, k1, k2] = sum_r D[k1, r] t[b, r, k2]


@triton.jit
def _sep_idct(z, D, DT):
    """Per block V = D^T Z D for a [B, 8, 8] tile."""
    w = tl.sum(z[:, :, :, None] * D[None, None, :, :], axis=2)  # w[b, k1, c] = sum_k2 Z[b, k1, k2] D[k2, c]
    return tl.sum(DT[None, :, :, None] * w[:, None, :, :], axis=2)  # V[b, r, c] = sum_k1 D[k1, r] w[b, k1, c]


@triton.jit
def _tile_index(tile, BLOCKS: tl.constexpr, SEP: tl.constexpr):
    """Block ids of a tile and the (row, col) inside the block, shaped for the variant's tile."""
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
def _matrices(SEP: tl.constexpr):
    """(A, B) with forward = tile @ A (dot) / D, D^T (separable); the inverse uses them transposed."""
    if SEP:
        kk = tl.arange(0, 8)[:, None]
        nn = tl.arange(0, 8)[None, :]
        A = _dct_entry(kk, nn)  # D[k, n]
        B = _dct_entry(nn, kk)  # D^T[n, k]
    else:
        pix = tl.arange(0, 64)[:, None]
        coef = tl.arange(0, 64)[None, :]
        # A = kron(D, D)^T: A[pixel (n1, n2), coef (k1, k2)] = D[k1, n1] D[k2, n2]
        A = _dct_entry(coef // 8, pix // 8) * _dct_entry(coef % 8, pix % 8)
        # B = kron(D, D): B[coef, pixel]
        B = _dct_entry(pix // 8, coef // 8) * _dct_entry(pix % 8, coef % 8)
    return A, B


@triton.jit
def _forward_transform(u, A, B, SEP: tl.constexpr, PRECISION: tl.constexpr):
    if SEP:
        z = _sep_dct(u, A, B)
    else:
        z = tl.dot(u, A, input_precision=PRECISION)
    return z


@triton.jit
def _inverse_transform(z, A, B, SEP: tl.constexpr, PRECISION: tl.constexpr):
    if SEP:
        v = _sep_idct(z, A, B)
    else:
        v = tl.dot(z, B, input_precision=PRECISION)
    return v


@triton.jit
def _load_tile_dct(
    x_ptr, tile, M, CPG, H, W, Hb, Wb, g, sxn, sxc, sxh, sxw, scale, A, B,
    BLOCKS: tl.constexpr, SEP: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Both kernels' start on a tile of group ``g``: (valid, n, c, row, col, k, z), with ``row`` /
    ``col`` the pixel and ``k`` the coefficient index of each element, ``z`` the DCT of ``scale * x``."""
    blk, r, cc = _tile_index(tile, BLOCKS, SEP)
    valid = blk < M
    n, c, bh, bw = _block_coords(blk, CPG, Hb, Wb, g)
    row = bh * 8 + r
    col = bw * 8 + cc
    # Replicate the edges: clamp the load indices (padded pixels are computed, never stored).
    x_off = n * sxn + c * sxc + tl.minimum(row, H - 1) * sxh + tl.minimum(col, W - 1) * sxw
    u = tl.load(x_ptr + x_off, mask=valid, other=0.0).to(tl.float32) * scale
    z = _forward_transform(u, A, B, SEP, PRECISION)
    return valid, n, c, row, col, r * 8 + cc, z


# --------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["M", "C", "H", "W", "Hb", "Wb", "sxn", "sxc", "sxh", "syn", "syc", "syh"])
def _qnt_fwd_kernel(
    x_ptr, y_ptr, q_ptr,
    M, C, H, W, Hb, Wb,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    scale, inv_scale,
    Q_PER_CHANNEL: tl.constexpr,
    SEP: tl.constexpr,
    PRECISION: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCKS: tl.constexpr,
    TILES: tl.constexpr,
):  # fmt: skip
    A, B = _matrices(SEP)
    pid = tl.program_id(0)
    for i in range(TILES):
        valid, n, c, row, col, k, z = _load_tile_dct(
            x_ptr, pid * TILES + i, M, C, H, W, Hb, Wb, 0, sxn, sxc, sxh, sxw, scale, A, B, BLOCKS, SEP, PRECISION
        )
        # The mask makes q a full tile (in the tile's layout) also when it is
        # shared; a broadcast [1, 64] / [1, 8, 8] q leaves the quantization in
        # the separable form's replicated reduction layout (8x the divisions).
        if Q_PER_CHANNEL:
            qv = tl.load(q_ptr + c * 64 + k, mask=valid, other=1.0)
        else:
            qv = tl.load(q_ptr + k, mask=valid, other=1.0)
        zq = _rint(tl.math.div_rn(z, qv), USE_LIBDEVICE) * qv
        v = _inverse_transform(zq, A, B, SEP, PRECISION)
        y_off = n * syn + c * syc + row * syh + col * syw
        mask = valid & (row < H) & (col < W)
        tl.store(y_ptr + y_off, (v * inv_scale).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["M", "CPG", "H", "W", "Hb", "Wb", "sgn", "sgc", "sgh", "sxn", "sxc", "sxh"])
def _qnt_grad_q_kernel(
    gy_ptr, x_ptr, q_ptr, part_ptr,
    M, CPG, H, W, Hb, Wb,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    scale,
    part_stride_g,
    SEP: tl.constexpr,
    PRECISION: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCKS: tl.constexpr,
    TILES: tl.constexpr,
):  # fmt: skip
    """partials[g, pid, k] = sum over this program's blocks of group g of G[k] (round(Z/q) - Z/q)[k]."""
    A, B = _matrices(SEP)
    pid = tl.program_id(0)
    g = tl.program_id(1)
    if SEP:
        acc = tl.zeros((8, 8), dtype=tl.float32)
    else:
        acc = tl.zeros((64,), dtype=tl.float32)
    for i in range(TILES):
        valid, n, c, row, col, k, z = _load_tile_dct(
            x_ptr, pid * TILES + i, M, CPG, H, W, Hb, Wb, g, sxn, sxc, sxh, sxw, scale, A, B, BLOCKS, SEP, PRECISION
        )
        # q is per channel exactly when the groups are the channels (CPG == 1).
        qv = tl.load(q_ptr + (g * 64) + k, mask=valid, other=1.0)
        t = tl.math.div_rn(z, qv)
        resid = _rint(t, USE_LIBDEVICE) - t
        # grad_y's partial edge blocks are zero padded (the adjoint of the crop).
        inside = valid & (row < H) & (col < W)
        gy_off = n * sgn + c * sgc + row * sgh + col * sgw
        gy = tl.load(gy_ptr + gy_off, mask=inside, other=0.0).to(tl.float32)
        gz = _forward_transform(gy, A, B, SEP, PRECISION)
        prod = tl.where(valid, gz * resid, 0.0)
        acc += tl.sum(prod, axis=0)
    if SEP:
        out_k = tl.arange(0, 8)[:, None] * 8 + tl.arange(0, 8)[None, :]
    else:
        out_k = tl.arange(0, 64)
    tl.store(part_ptr + g * part_stride_g + pid * 64 + out_k, acc)


# --------------------------------------------------------------------------- butterfly variant (generated source)
#
# One thread holds whole 8x8 blocks: the 64 pixels of a block are 64 separate
# [BLOCKS] tensors (one element per block), and the 1-D DCTs along rows and
# columns are even/odd butterflies with compile-time constants (36 adds and
# multiplies per 8 points instead of 64 multiply-adds), all in registers with
# no data exchange between threads. Triton has no lists of tensors, so the
# straight-line kernel body is generated here once at import.


def _dct64() -> list[list[float]]:
    """The DCT matrix in float64 (the kernels round each constant to float32)."""
    d = [[0.5 * math.cos(math.pi * k * (2 * n + 1) / 16) for n in range(8)] for k in range(8)]
    d[0] = [math.sqrt(0.125)] * 8
    return d


def _lin(terms) -> str:
    """'c0 * a + c1 * b ...' for (coefficient, name) pairs, dropping zero coefficients."""
    parts = [f"{c!r} * {v}" for c, v in terms if abs(c) > 1e-12]
    return " + ".join(parts) if parts else "0.0"


def _gen_dct8(src: list[str], dst: list[str], tmp: str) -> list[str]:
    """Lines computing dst[k] = sum_n D[k, n] src[n] (even/odd butterflies)."""
    d = _dct64()
    lines = [f"{tmp}s{n} = {src[n]} + {src[7 - n]}" for n in range(4)]
    lines += [f"{tmp}d{n} = {src[n]} - {src[7 - n]}" for n in range(4)]
    # even outputs: 4-point transform of s, split again (k = 0, 4 symmetric; k = 2, 6 antisymmetric in n <-> 3 - n)
    lines += [f"{tmp}ss{n} = {tmp}s{n} + {tmp}s{3 - n}" for n in range(2)]
    lines += [f"{tmp}sd{n} = {tmp}s{n} - {tmp}s{3 - n}" for n in range(2)]
    for k in (0, 4):
        lines.append(f"{dst[k]} = " + _lin([(d[k][n], f"{tmp}ss{n}") for n in range(2)]))
    for k in (2, 6):
        lines.append(f"{dst[k]} = " + _lin([(d[k][n], f"{tmp}sd{n}") for n in range(2)]))
    for k in (1, 3, 5, 7):
        lines.append(f"{dst[k]} = " + _lin([(d[k][n], f"{tmp}d{n}") for n in range(4)]))
    return lines


def _gen_idct8(src: list[str], dst: list[str], tmp: str) -> list[str]:
    """Lines computing dst[n] = sum_k D[k, n] src[k] (the transposed butterflies)."""
    d = _dct64()
    lines = []
    for n in range(2):
        lines.append(f"{tmp}ee{n} = " + _lin([(d[k][n], src[k]) for k in (0, 4)]))
        lines.append(f"{tmp}eo{n} = " + _lin([(d[k][n], src[k]) for k in (2, 6)]))
    for n in range(2):
        lines.append(f"{tmp}e{n} = {tmp}ee{n} + {tmp}eo{n}")
        lines.append(f"{tmp}e{3 - n} = {tmp}ee{n} - {tmp}eo{n}")
    for n in range(4):
        lines.append(f"{tmp}o{n} = " + _lin([(d[k][n], src[k]) for k in (1, 3, 5, 7)]))
    for n in range(4):
        lines.append(f"{dst[n]} = {tmp}e{n} + {tmp}o{n}")
        lines.append(f"{dst[7 - n]} = {tmp}e{n} - {tmp}o{n}")
    return lines


def _gen_along(gen8, axis: int, src: str, dst: str, tmp: str) -> list[str]:
    """``gen8`` on each of the 8 rows (``axis=1``: src{r}_{0..7} -> dst{r}_{0..7}, temporaries
    tmp{r}) or columns (``axis=0``: src{0..7}_{c} -> dst{0..7}_{c}, temporaries tmp{c})."""

    def name(p, i, j):  # i: which row / column, j: the position along it
        return f"{p}{i}_{j}" if axis == 1 else f"{p}{j}_{i}"

    lines = []
    for i in range(8):
        lines += gen8([name(src, i, j) for j in range(8)], [name(dst, i, j) for j in range(8)], f"{tmp}{i}")
    return lines


def _gen_dct2(p: str, out: str) -> list[str]:
    """2-D DCT of the 64 tensors p{r}_{c} into out{k1}_{k2}: rows (over c), then columns (over r)."""
    return _gen_along(_gen_dct8, 1, p, f"{p}t", f"{p}r") + _gen_along(_gen_dct8, 0, f"{p}t", out, f"{p}c")


def _gen_idct2(p: str, out: str) -> list[str]:
    """2-D inverse DCT of p{k1}_{k2} into out{r}_{c}: columns (over k1), then rows (over k2)."""
    return _gen_along(_gen_idct8, 0, p, f"{p}w", f"{p}ic") + _gen_along(_gen_idct8, 1, f"{p}w", out, f"{p}ir")


@triton.jit
def _split8(t):
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
def _join8(c0, c1, c2, c3, c4, c5, c6, c7):
    """Eight [B] tensors -> [B, 8] (the inverse of _split8)."""
    e = tl.join(tl.join(c0, c4), tl.join(c2, c6))
    o = tl.join(tl.join(c1, c5), tl.join(c3, c7))
    return tl.reshape(tl.join(e, o), (c0.shape[0], 8))


# Block rows are loaded and stored as [BLOCKS, 8] tiles (8 contiguous pixels per
# block and row: coalesced, and 8 memory operations per 8x8 block instead of 64,
# which also keeps Triton's coalescing pass, quadratic in their number, fast),
# then split into per-column tensors in registers.
_BUTTERFLY_PROLOGUE = """\
    pid = tl.program_id(0)
    cols = tl.arange(0, 8)[None, :]
    for i in range(TILES):
        blk = (pid * TILES + i) * BLOCKS + tl.arange(0, BLOCKS)
        valid = blk < M
        n, c, bh, bw = _block_coords(blk, CPG, Hb, Wb, g)
        row0 = bh * 8
        col = bw[:, None] * 8 + cols
        cin = valid[:, None] & (col < W)
        xb = (x_ptr + n * sxn + c * sxc)[:, None] + tl.minimum(col, W - 1) * sxw
"""


def _gen_rows(name: str, line_of_row) -> list[str]:
    """Load 8 rows (``line_of_row(r)`` is the [B, 8] expression) into name{r}_{c} tensors."""
    lines = []
    for r in range(8):
        lines.append(f"{name}row = {line_of_row(r)}")
        lines.append(", ".join(f"{name}{r}_{cc}" for cc in range(8)) + f" = _split8({name}row)")
    return lines


def _x_row(r: int) -> str:
    return f"tl.load(xb + tl.minimum(row0 + {r}, H - 1)[:, None] * sxh, mask=valid[:, None], other=0.0).to(tl.float32) * scale"


def _gen_coefficients_and_q(qoffset: str) -> list[str]:
    """Both kernels' start: the DCT coefficients z{k1}_{k2} of the scaled x block and the table
    entries q{k1}_{k2} at offset ``qoffset`` (masked with the blocks so that q is a full [B, 8]
    tile like the data)."""
    lines = _gen_rows("u", _x_row)
    lines += _gen_dct2("u", "z")
    lines.append(f"qoff = {qoffset}")
    lines += _gen_rows(
        "q", lambda r: f"tl.load(q_ptr + (qoff)[:, None] + {r * 8} + cols, mask=valid[:, None], other=1.0)"
    )
    return lines


def _generate_butterfly_source() -> str:
    ind = " " * 8
    fwd = [
        '@triton.jit(do_not_specialize=["M", "C", "H", "W", "Hb", "Wb", "sxn", "sxc", "sxh", "syn", "syc", "syh"])',
        "def _qnt_fwd_butterfly_kernel(",
        "    x_ptr, y_ptr, q_ptr, M, C, H, W, Hb, Wb, sxn, sxc, sxh, sxw, syn, syc, syh, syw, scale, inv_scale,",
        "    Q_PER_CHANNEL: tl.constexpr, SEP: tl.constexpr, PRECISION: tl.constexpr,",
        "    USE_LIBDEVICE: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,",
        "):",
        "    CPG = C",
        "    g = 0",
        _BUTTERFLY_PROLOGUE.rstrip("\n"),
    ]
    body = _gen_coefficients_and_q("c * 64 if Q_PER_CHANNEL else c * 0")
    for k1 in range(8):
        for k2 in range(8):
            body.append(f"z{k1}_{k2} = _rint(tl.math.div_rn(z{k1}_{k2}, q{k1}_{k2}), USE_LIBDEVICE) * q{k1}_{k2}")
    body += _gen_idct2("z", "v")
    body.append("yb = (y_ptr + n * syn + c * syc)[:, None] + col * syw")
    for r in range(8):
        row = ", ".join(f"v{r}_{cc}" for cc in range(8))
        body.append(
            f"tl.store(yb + (row0 + {r})[:, None] * syh, (_join8({row}) * inv_scale).to(y_ptr.dtype.element_ty), "
            f"mask=cin & (row0 + {r} < H)[:, None])"
        )
    fwd += [ind + line for line in body]

    gq = [
        '@triton.jit(do_not_specialize=["M", "CPG", "H", "W", "Hb", "Wb", "sgn", "sgc", "sgh", "sxn", "sxc", "sxh"])',
        "def _qnt_grad_q_butterfly_kernel(",
        "    gy_ptr, x_ptr, q_ptr, part_ptr, M, CPG, H, W, Hb, Wb, sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw, scale,",
        "    part_stride_g, SEP: tl.constexpr, PRECISION: tl.constexpr, USE_LIBDEVICE: tl.constexpr,",
        "    BLOCKS: tl.constexpr, TILES: tl.constexpr,",
        "):",
        "    g = tl.program_id(1)",
    ]
    gq += [f"    acc{k1} = tl.zeros((8,), dtype=tl.float32)" for k1 in range(8)]
    gq.append(_BUTTERFLY_PROLOGUE.rstrip("\n"))
    body = _gen_coefficients_and_q("g * 64 + c * 0")
    for k1 in range(8):
        for k2 in range(8):
            body.append(f"t{k1}_{k2} = tl.math.div_rn(z{k1}_{k2}, q{k1}_{k2})")
            body.append(f"t{k1}_{k2} = _rint(t{k1}_{k2}, USE_LIBDEVICE) - t{k1}_{k2}")
    body.append("gyb = (gy_ptr + n * sgn + c * sgc)[:, None] + col * sgw")
    body += _gen_rows(
        "e",
        lambda r: (
            f"tl.load(gyb + (row0 + {r})[:, None] * sgh, mask=cin & (row0 + {r} < H)[:, None], other=0.0)"
            ".to(tl.float32)"
        ),
    )
    body += _gen_dct2("e", "f")
    for k1 in range(8):
        row = ", ".join(f"f{k1}_{k2} * t{k1}_{k2}" for k2 in range(8))
        body.append(f"acc{k1} += tl.sum(tl.where(valid[:, None], _join8({row}), 0.0), axis=0)")
    gq += [ind + line for line in body]
    gq += [
        f"    tl.store(part_ptr + g * part_stride_g + pid * 64 + {k1 * 8} + tl.arange(0, 8), acc{k1})"
        for k1 in range(8)
    ]
    return "\n".join(fwd) + "\n\n\n" + "\n".join(gq) + "\n"


def _load_butterfly_kernels():
    src = _generate_butterfly_source()
    filename = "<gcln_fast.kernels.qnt_triton: generated butterfly kernels>"
    # triton.jit reads the source back through inspect/linecache.
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace = {
        "triton": triton,
        "tl": tl,
        "_rint": _rint,
        "_block_coords": _block_coords,
        "_split8": _split8,
        "_join8": _join8,
    }
    exec(compile(src, filename, "exec"), namespace)
    return namespace["_qnt_fwd_butterfly_kernel"], namespace["_qnt_grad_q_butterfly_kernel"]


_qnt_fwd_butterfly_kernel, _qnt_grad_q_butterfly_kernel = _load_butterfly_kernels()


# --------------------------------------------------------------------------- autotuning


def _configs(variant: str):
    if variant == "dot":
        if INTERPRET:
            return [triton.Config({"BLOCKS": 32, "TILES": 1}, num_warps=4)]
        return [triton.Config({"BLOCKS": b, "TILES": t}, num_warps=w) for b, t, w in [(64, 1, 4), (64, 4, 8)]]
    if variant == "separable":
        if INTERPRET:
            return [triton.Config({"BLOCKS": 16, "TILES": 1}, num_warps=4)]
        return [
            triton.Config({"BLOCKS": b, "TILES": t}, num_warps=w) for b, t, w in [(16, 1, 4), (16, 4, 4), (32, 1, 8)]
        ]
    # butterfly: one block per thread (BLOCKS = 32 * num_warps), or two
    if INTERPRET:
        # the interpreter's cost is per operation, not per element: few, wide tiles
        return [triton.Config({"BLOCKS": 256, "TILES": 1}, num_warps=2)]
    return [triton.Config({"BLOCKS": b, "TILES": t}, num_warps=w) for b, t, w in [(128, 1, 4), (256, 2, 8)]]


def _min_tile_blocks(variant: str) -> int:
    return min(cfg.kwargs["BLOCKS"] * cfg.kwargs["TILES"] for cfg in _configs(variant))


def _autotuned(kernel, variant: str):
    # M (blocks per launch/group) decides the tiling; the other keys select
    # distinct compiled kernels anyway.
    return triton.autotune(configs=_configs(variant), key=["M", "H", "W"])(kernel)


_FWD = {
    "dot": _autotuned(_qnt_fwd_kernel, "dot"),
    "separable": _autotuned(_qnt_fwd_kernel, "separable"),
    "butterfly": _autotuned(_qnt_fwd_butterfly_kernel, "butterfly"),
}
_GRAD_Q = {
    "dot": _autotuned(_qnt_grad_q_kernel, "dot"),
    "separable": _autotuned(_qnt_grad_q_kernel, "separable"),
    "butterfly": _autotuned(_qnt_grad_q_butterfly_kernel, "butterfly"),
}


def _use_libdevice(t: torch.Tensor) -> bool:
    return not INTERPRET and t.device.type == "cuda"


if DEFAULT_VARIANT not in VARIANTS:
    raise ImportError(f"GCLN_FAST_TRITON_VARIANT must be one of {VARIANTS}, got {DEFAULT_VARIANT!r}")


def _check(variant: str, precision: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if precision not in DOT_PRECISIONS:
        raise ValueError(f"precision must be one of {DOT_PRECISIONS}, got {precision!r}")


# --------------------------------------------------------------------------- launchers


def launch_qnt(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: float,
    *,
    variant: str = DEFAULT_VARIANT,
    precision: str = DEFAULT_DOT_PRECISION,
    wrap=None,
) -> torch.Tensor:
    """Forward QNT of ``x`` (N, C, H, W) with the canonical (Cq, 8, 8) float32 table ``q``.

    ``wrap`` is applied to the kernel before launching (``wrap_triton`` inside the op).
    """
    _check(variant, precision)
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    hb, wb = triton.cdiv(h, 8), triton.cdiv(w, 8)
    m = n * c * hb * wb
    kernel = _FWD[variant]
    if wrap is not None:
        kernel = wrap(kernel)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCKS"] * meta["TILES"]),)

    scale = float(scale)
    kernel[grid](
        x, y, q,
        m, c, h, w, hb, wb,
        *x.stride(),
        *y.stride(),
        scale, 1.0 / scale,
        Q_PER_CHANNEL=bool(q.shape[0] != 1),
        SEP=variant == "separable",
        PRECISION=precision,
        USE_LIBDEVICE=_use_libdevice(x),
    )  # fmt: skip
    return y


def launch_grad_q(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    q: torch.Tensor,
    scale: float,
    *,
    variant: str = DEFAULT_VARIANT,
    precision: str = DEFAULT_DOT_PRECISION,
    wrap=None,
) -> torch.Tensor:
    """LSQ step-size gradient, float32 of q's shape (Cq, 8, 8). Deterministic: per-program
    partial sums in a buffer, then a fixed-order ``sum`` (no atomics)."""
    _check(variant, precision)
    n, c, h, w = x.shape
    cq = q.shape[0]
    if x.numel() == 0:
        return torch.zeros((cq, 8, 8), dtype=torch.float32, device=x.device)
    hb, wb = triton.cdiv(h, 8), triton.cdiv(w, 8)
    # Groups: all channels together when q is shared, one group per channel otherwise.
    cpg = c if cq == 1 else 1
    m = n * cpg * hb * wb  # blocks per group
    programs = triton.cdiv(m, _min_tile_blocks(variant))  # the most any config launches
    partials = torch.zeros((cq, programs, 64), dtype=torch.float32, device=x.device)
    kernel = _GRAD_Q[variant]
    if wrap is not None:
        kernel = wrap(kernel)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCKS"] * meta["TILES"]), cq)

    scale = float(scale)
    kernel[grid](
        grad_y, x, q, partials,
        m, cpg, h, w, hb, wb,
        *grad_y.stride(),
        *x.stride(),
        scale,
        programs * 64,
        SEP=variant == "separable",
        PRECISION=precision,
        USE_LIBDEVICE=_use_libdevice(x),
    )  # fmt: skip
    return (partials.sum(dim=1) * (1.0 / scale)).view(cq, 8, 8)


# --------------------------------------------------------------------------- ops


@triton_op("gcln_fast::qnt_triton", mutates_args=())
def qnt_triton(x: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
    """QNT forward (Triton): ``x`` (N, C, H, W), ``q`` canonical float32 (Cq, 8, 8)."""
    return launch_qnt(x, q, scale, wrap=wrap_triton)


@triton_op("gcln_fast::qnt_grad_q_triton", mutates_args=())
def qnt_grad_q_triton(grad_y: torch.Tensor, x: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
    """Step-size gradient (Triton), float32 (Cq, 8, 8)."""
    return launch_grad_q(grad_y, x, q, scale, wrap=wrap_triton)


__all__ = [
    "DEFAULT_VARIANT",
    "VARIANTS",
    "launch_grad_q",
    "launch_qnt",
    "qnt_grad_q_triton",
    "qnt_triton",
]
