"""The ``butterfly`` form of the Triton QNT kernels, generated as source at import.

One thread holds whole 8x8 blocks: the 64 pixels of a block are 64 separate [BLOCKS]
tensors (one element per block), and the 1-D DCTs along rows and columns are even/odd
butterflies with compile-time constants (36 adds and multiplies per 8 points instead of
64 multiply-adds), all in registers with no data exchange between threads. Triton has no
lists of tensors, so the straight-line kernel bodies are generated here: this module is
the generator (plain Python producing source lines) and :func:`load_kernels`, which
compiles the source into the two ``@triton.jit`` kernels.

Block rows are loaded and stored as [BLOCKS, 8] tiles (8 contiguous pixels per block and
row: coalesced, and 8 memory operations per 8x8 block instead of 64, which also keeps
Triton's coalescing pass, quadratic in their number, fast), then split into per-column
tensors in registers.
"""

from __future__ import annotations

import linecache

import triton
import triton.language as tl

from gcln_fast.qnt_constants import dct_rows

from . import device


def _lin(terms) -> str:
    """'c0 * a + c1 * b ...' for (coefficient, name) pairs, dropping zero coefficients."""
    parts = [f"{c!r} * {v}" for c, v in terms if abs(c) > 1e-12]
    return " + ".join(parts) if parts else "0.0"


def gen_dct8(src: list[str], dst: list[str], tmp: str) -> list[str]:
    """Lines computing dst[k] = sum_n D[k, n] src[n] (even/odd butterflies)."""
    d = dct_rows()
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


def gen_idct8(src: list[str], dst: list[str], tmp: str) -> list[str]:
    """Lines computing dst[n] = sum_k D[k, n] src[k] (the transposed butterflies)."""
    d = dct_rows()
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


def _name(p: str, axis: int, i: int, j: int) -> str:
    """Element j along line i of the 64 tensors p{row}_{col}: rows (axis=1) or columns (axis=0)."""
    return f"{p}{i}_{j}" if axis == 1 else f"{p}{j}_{i}"


def gen_along(gen8, axis: int, src: str, dst: str, tmp: str) -> list[str]:
    """``gen8`` on each of the 8 rows (``axis=1``: src{r}_{0..7} -> dst{r}_{0..7}, temporaries
    tmp{r}) or columns (``axis=0``: src{0..7}_{c} -> dst{0..7}_{c}, temporaries tmp{c})."""
    lines = []
    for i in range(8):
        src_line = [_name(src, axis, i, j) for j in range(8)]
        lines += gen8(src_line, [_name(dst, axis, i, j) for j in range(8)], f"{tmp}{i}")
    return lines


def gen_dct2(p: str, out: str) -> list[str]:
    """2-D DCT of the 64 tensors p{r}_{c} into out{k1}_{k2}: rows (over c), then columns (over r)."""
    return gen_along(gen_dct8, 1, p, f"{p}t", f"{p}r") + gen_along(gen_dct8, 0, f"{p}t", out, f"{p}c")


def gen_idct2(p: str, out: str) -> list[str]:
    """2-D inverse DCT of p{k1}_{k2} into out{r}_{c}: columns (over k1), then rows (over k2)."""
    return gen_along(gen_idct8, 0, p, f"{p}w", f"{p}ic") + gen_along(gen_idct8, 1, f"{p}w", out, f"{p}ir")


def gen_fold(p: str, axis: int, last: str) -> list[str]:
    """The adjoint of the replicate padding of the 64 tensors p{r}_{c} over the row index
    (``axis=0``, in each column) or the column index (``axis=1``, in each row): entries past
    index ``last`` (a [BLOCKS] tensor) are added onto entry ``last``. Suffix sums from the far
    end; entries past ``last`` are never stored, so only entry ``last`` changes."""
    lines = []
    for i in range(8):
        tail = f"{p}f{axis}_{i}"
        lines.append(f"{tail} = {_name(p, axis, i, 7)}")
        for j in range(6, -1, -1):
            v = _name(p, axis, i, j)
            lines.append(f"{p}keep = {v}")
            lines.append(f"{v} = tl.where({last} == {j}, {v} + {tail}, {v})")
            if j:
                lines.append(f"{tail} = {tail} + {p}keep")
    return lines


def gen_rows(name: str, line_of_row) -> list[str]:
    """Load 8 rows (``line_of_row(r)`` is the [B, 8] expression) into name{r}_{c} tensors."""
    lines = []
    for r in range(8):
        lines.append(f"{name}row = {line_of_row(r)}")
        lines.append(", ".join(f"{name}{r}_{cc}" for cc in range(8)) + f" = split8({name}row)")
    return lines


_PROLOGUE = """\
    pid = tl.program_id(0)
    cols = tl.arange(0, 8)[None, :]
    for i in range(TILES):
        blk = (pid * TILES + i) * BLOCKS + tl.arange(0, BLOCKS)
        valid = blk < M
        n, c, bh, bw = block_coords(blk, CPG, Hb, Wb, n0, c0)
        row0 = bh * 8
        col = bw[:, None] * 8 + cols
        cin = valid[:, None] & (col < W)
        xb = (x_ptr + n * sxn + c * sxc)[:, None] + tl.minimum(col, W - 1) * sxw
        qoff = table_offset(n, c, QSN, QSC)"""


def _x_row(r: int) -> str:
    return (
        f"tl.load(xb + tl.minimum(row0 + {r}, H - 1)[:, None] * sxh, mask=valid[:, None], other=0.0)"
        ".to(tl.float32) * scale"
    )


def _q_row(r: int) -> str:
    # Masked with the blocks so that q is a full [B, 8] tile like the data.
    return f"tl.load(q_ptr + qoff[:, None] + {r * 8} + cols, mask=valid[:, None], other=1.0)"


def _store_rows(base: str, ptr: str, row_stride: str, values: str, scale: str = "") -> list[str]:
    """Store the in-image part of values{r}_{c} (times ``scale``) at ``base`` + row * ``row_stride``."""
    lines = []
    for r in range(8):
        row = ", ".join(f"{values}{r}_{cc}" for cc in range(8))
        lines.append(
            f"tl.store({base} + (row0 + {r})[:, None] * {row_stride}, (join8({row}){scale}).to({ptr}.dtype.element_ty), "
            f"mask=cin & (row0 + {r} < H)[:, None])"
        )
    return lines


def _coefficients() -> list[str]:
    """Both kernels' start: the DCT coefficients z{k1}_{k2} of the scaled x block, the table
    entries q{k1}_{k2}."""
    return gen_rows("u", _x_row) + gen_dct2("u", "z") + gen_rows("q", _q_row)


def _forward_source() -> list[str]:
    head = [
        '@triton.jit(do_not_specialize=["M", "C", "H", "W", "Hb", "Wb", "QSN", "QSC", "sxn", "sxc", "sxh", "syn", '
        '"syc", "syh"])',
        "def qnt_fwd_butterfly_kernel(",
        "    x_ptr, y_ptr, q_ptr, M, C, H, W, Hb, Wb, QSN, QSC, sxn, sxc, sxh, sxw, syn, syc, syh, syw, scale,",
        "    inv_scale, SURROGATE: tl.constexpr, SOFT: tl.constexpr, SEP: tl.constexpr, PRECISION: tl.constexpr,",
        "    USE_LIBDEVICE: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,",
        "):",
        "    CPG = C",
        "    n0 = 0",
        "    c0 = 0",
        _PROLOGUE,
    ]
    body = _coefficients()
    body += [
        f"z{a}_{b} = quantize(z{a}_{b}, q{a}_{b}, SURROGATE, SOFT, USE_LIBDEVICE)" for a in range(8) for b in range(8)
    ]
    body += gen_idct2("z", "v")
    body.append("yb = (y_ptr + n * syn + c * syc)[:, None] + col * syw")
    body += _store_rows("yb", "y_ptr", "syh", "v", " * inv_scale")
    return head + [" " * 8 + line for line in body]


def _backward_source() -> list[str]:
    head = [
        '@triton.jit(do_not_specialize=["M", "CPG", "H", "W", "Hb", "Wb", "QSN", "QSC", "GCQ", "GN1", "GC1", "sgn",'
        ' "sgc", "sgh", "sxn", "sxc", "sxh", "sdn", "sdc", "sdh"])',
        "def qnt_bwd_butterfly_kernel(",
        "    gy_ptr, x_ptr, q_ptr, gx_ptr, part_ptr, M, CPG, H, W, Hb, Wb, QSN, QSC, GCQ, GN1, GC1,",
        "    sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, scale, part_stride_g,",
        "    SURROGATE: tl.constexpr, NEED_GX: tl.constexpr, NEED_GQ: tl.constexpr, SEP: tl.constexpr,",
        "    PRECISION: tl.constexpr, USE_LIBDEVICE: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,",
        "):",
        "    g = tl.program_id(1)",
        "    n0 = (g // GCQ) * GN1",
        "    c0 = (g % GCQ) * GC1",
    ]
    head += [f"    acc{k1} = tl.zeros((8,), dtype=tl.float32)" for k1 in range(8)]
    head.append(_PROLOGUE)
    body = _coefficients()
    for a in range(8):
        for b in range(8):
            e = f"{a}_{b}"
            body.append(f"u{e} = tl.math.div_rn(z{e}, q{e})")
            body.append(f"r{e} = round_tie(u{e}, USE_LIBDEVICE)")
            body.append(f"s{e} = surrogate_slope(u{e}, r{e}, SURROGATE, USE_LIBDEVICE)")
    body.append("gyb = (gy_ptr + n * sgn + c * sgc)[:, None] + col * sgw")
    body += gen_rows(
        "e",
        lambda r: (
            f"tl.load(gyb + (row0 + {r})[:, None] * sgh, mask=cin & (row0 + {r} < H)[:, None], other=0.0)"
            ".to(tl.float32)"
        ),
    )
    body += gen_dct2("e", "f")  # f = G
    body.append("if NEED_GQ:")
    for a in range(8):
        terms = ", ".join(
            f"f{a}_{b} * (surrogate_value(u{a}_{b}, r{a}_{b}, SURROGATE, USE_LIBDEVICE) - u{a}_{b} * s{a}_{b})"
            for b in range(8)
        )
        body.append(f"    acc{a} += tl.sum(tl.where(valid[:, None], join8({terms}), 0.0), axis=0)")
    body.append("if NEED_GX:")
    gx = [f"w{a}_{b} = s{a}_{b} * f{a}_{b}" for a in range(8) for b in range(8)]
    gx += gen_idct2("w", "o")
    gx.append("last_r = H - 1 - row0")
    gx += gen_fold("o", 0, "last_r")
    gx.append("last_c = W - 1 - bw * 8")
    gx += gen_fold("o", 1, "last_c")
    gx.append("gxb = (gx_ptr + n * sdn + c * sdc)[:, None] + col * sdw")
    gx += _store_rows("gxb", "gx_ptr", "sdh", "o")
    body += ["    " + line for line in gx]
    tail = ["    if NEED_GQ:"]
    tail += [
        f"        tl.store(part_ptr + g * part_stride_g + pid * 64 + {k1 * 8} + tl.arange(0, 8), acc{k1})"
        for k1 in range(8)
    ]
    return head + [" " * 8 + line for line in body] + tail


def generate_source() -> str:
    """The source of both butterfly kernels."""
    return "\n".join(_forward_source()) + "\n\n\n" + "\n".join(_backward_source()) + "\n"


def load_kernels():
    """(forward kernel, backward kernel), compiled from :func:`generate_source`."""
    src = generate_source()
    filename = "<gcln_fast.kernels.butterfly: generated kernels>"
    # triton.jit reads the source back through inspect/linecache.
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    names = ["block_coords", "table_offset", "split8", "join8", "quantize", "round_tie"]
    names += ["surrogate_value", "surrogate_slope"]
    namespace = {"triton": triton, "tl": tl, **{name: getattr(device, name) for name in names}}
    exec(compile(src, filename, "exec"), namespace)
    return namespace["qnt_fwd_butterfly_kernel"], namespace["qnt_bwd_butterfly_kernel"]


qnt_fwd_butterfly_kernel, qnt_bwd_butterfly_kernel = load_kernels()
