"""Chroma subsampling as libjpeg-turbo does it (jcsample.c, jdsample.c), and the adjoints.

Downsampling is the box average of each 2x2 (4:2:0) or 1x2 (4:2:2) group. At the edges
libjpeg completes the full-resolution image before averaging: its last column is
replicated to the width of whole chroma blocks (16-pixel MCUs, ``expand_right_edge``) and
its last row to an even height (``expand_bottom_edge``); the chroma plane's rows are then
replicated to whole blocks, which the QNT op's own edge replication does. So the chroma
columns past the image come from the last image column alone, not from the last chroma
column. libjpeg rounds the average with an alternating bias (``(sum + 1, 2, 1, 2, ...) >> 2``
and ``(sum + 0, 1, 0, 1, ...) >> 1`` along a row).

Upsampling is libjpeg's default "fancy" triangle filter: each output sample is 3/4 of the
nearer and 1/4 of the further input sample along every upsampled axis, edges replicated
(bilinear interpolation with ``align_corners=False``); libjpeg rounds it with the biases
8, 7, 8, 7, ... (``>> 4``, 4:2:0) and 1, 2, 1, 2, ... (``>> 2``, 4:2:2) along a row. A
component at most two samples wide is upsampled by replication instead (libjpeg's box
upsampler).

These functions work on plain tensors (the autograd Functions in :mod:`.stages` call them
and their adjoints; on the CPU the fused kernels replace them). They avoid ``avg_pool2d`` and
``interpolate``, whose CPU kernels took 2-6x the time of these slice sums on 32x32 images
(interleaved single-thread timings on the project's 2-core machine, under load).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUBSAMPLING = ("4:2:0", "4:2:2", "4:4:4")
# (vertical, horizontal) factor of the chroma grid.
FACTORS = {"4:2:0": (2, 2), "4:2:2": (1, 2), "4:4:4": (1, 1)}
# Rounding biases of even and odd output columns, in units of the divisor.
_DOWN_BIAS = {"4:2:0": (1.0, 2.0), "4:2:2": (0.0, 1.0)}
_UP_BIAS = {"4:2:0": (8 / 16, 7 / 16), "4:2:2": (1 / 4, 2 / 4)}


def chroma_size(mode: str, size: tuple[int, int]) -> tuple[int, int]:
    """Size of the chroma samples inside an image of ``size`` (libjpeg's ``downsampled_*``)."""
    fv, fh = FACTORS[mode]
    return -(-size[0] // fv), -(-size[1] // fh)


def _column_pattern(pair, width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(pair, dtype=like.dtype, device=like.device).repeat((width + 1) // 2)[:width]


def downsample(c: torch.Tensor, mode: str, exact: bool) -> torch.Tensor:
    """(N, K, H, W) chroma -> (N, K, ceil(H/fv), 8 * ceil(W/16)) (whole chroma blocks wide), a new tensor."""
    fv, fh = FACTORS[mode]
    n, k, h, w = c.shape
    pad_w, pad_h = -w % (8 * fh), h % fv
    if pad_w or pad_h:
        c = F.pad(c, (0, pad_w, 0, pad_h), mode="replicate")
        h, w = h + pad_h, w + pad_w
    if fv == 2:  # sum row pairs: contiguous rows, vectorised
        rows = c.view(n, k, h // 2, 2 * w)
        c = rows[..., :w] + rows[..., w:]
    pairs = c.reshape(n, k, h // fv, w // 2, 2)
    s = pairs[..., 0] + pairs[..., 1]
    if exact:
        s.add_(_column_pattern(_DOWN_BIAS[mode], s.shape[-1], s)).mul_(1.0 / (fv * fh)).floor_()
    else:
        s.mul_(1.0 / (fv * fh))
    return s


def downsample_adjoint(g: torch.Tensor, mode: str, out: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`downsample` (without its rounding): writes the (N, K, H, W) gradient into ``out``."""
    fv, fh = FACTORS[mode]
    n, k, hc, wc = g.shape
    h, w = out.shape[-2:]
    g = g * (1.0 / (fv * fh))
    full = g[:, :, :, None, :, None].expand(n, k, hc, fv, wc, fh).reshape(n, k, hc * fv, wc * fh)
    out.copy_(full[..., :h, :w])
    if hc * fv > h:  # the replicated last row (odd height)
        out[..., h - 1, :] += full[..., h, :w]
    if wc * fh > w:  # the replicated last column, out to whole chroma blocks
        out[..., :, w - 1] += full[..., :h, w:].sum(-1)
        if hc * fv > h:
            out[..., h - 1, w - 1] += full[..., h, w:].sum(-1)
    return out


def _box_up(c: torch.Tensor, fv: int, fh: int) -> torch.Tensor:
    return c.repeat_interleave(fv, dim=-2).repeat_interleave(fh, dim=-1)


def _interleaved_sums(taps, shape, like: torch.Tensor) -> torch.Tensor:
    """``out[:, :, :, r, :, s] = a + 3 * b`` for ``(a, b) = taps[r][s]``."""
    if torch.compiler.is_compiling():  # dynamo rejects strided out= tensors; inductor fuses this anyway
        return torch.stack([torch.stack([a + 3 * b for a, b in row], -1) for row in taps], 3)
    out = like.new_empty(shape)  # eager: each sum written straight into its strided place
    for r, row in enumerate(taps):
        for s, (a, b) in enumerate(row):
            torch.add(a, b, alpha=3, out=out[:, :, :, r, :, s])
    return out


def upsample(c: torch.Tensor, mode: str, size: tuple[int, int], exact: bool) -> torch.Tensor:
    """(N, K, >= h, >= w) chroma -> contiguous (N, K, H, W), ``size = (H, W)``: libjpeg's fancy filter."""
    fv, fh = FACTORS[mode]
    h, w = chroma_size(mode, size)
    c = c[..., :h, :w]
    if w <= 2:
        up = _box_up(c, fv, fh)
    else:
        p = F.pad(c, (1, 1, 1, 1) if fv == 2 else (1, 1, 0, 0), mode="replicate").mul_(0.25 if fv == 1 else 0.0625)
        rows = [p]
        if fv == 2:  # the row above for even output rows, the row below for odd ones
            rows = [
                torch.add(p[..., :-2, :], p[..., 1:-1, :], alpha=3),
                torch.add(p[..., 2:, :], p[..., 1:-1, :], alpha=3),
            ]
        # Triangle taps as x + 3 * y, then interleaved: (row phase, column phase) -> output.
        taps = [((v[..., :-2], v[..., 1:-1]), (v[..., 2:], v[..., 1:-1])) for v in rows]
        up = _interleaved_sums(taps, (c.shape[0], c.shape[1], h, fv, w, 2), c)
        up = up.view(c.shape[0], c.shape[1], fv * h, 2 * w)
        if exact:
            up.add_(_column_pattern(_UP_BIAS[mode], 2 * w, up)).floor_()
    if up.shape[-2:] != tuple(size):
        up = up[..., : size[0], : size[1]].contiguous()
    return up


def _adjoint_pairs(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of the 1-D fancy upsampling along dim -2 of ``g`` (2h rows -> h rows)."""
    n, k, h2, w = g.shape
    pairs = g.view(n, k, h2 // 2, 2, w)
    even, odd = pairs[:, :, :, 0], pairs[:, :, :, 1]
    out = torch.add(even, odd).mul_(0.75)
    out[:, :, :-1].add_(even[:, :, 1:], alpha=0.25)  # row i is the far neighbour of output 2i+2
    out[:, :, 1:].add_(odd[:, :, :-1], alpha=0.25)  # ... and of output 2i-1
    out[:, :, 0].add_(even[:, :, 0], alpha=0.25)  # the replicated edges
    out[:, :, -1].add_(odd[:, :, -1], alpha=0.25)
    return out


def upsample_adjoint(g: torch.Tensor, mode: str, chroma: tuple[int, int]) -> torch.Tensor:
    """Adjoint of :func:`upsample` (without its rounding): (N, K, H, W) -> (N, K, h, w), ``chroma = (h, w)``."""
    fv, fh = FACTORS[mode]
    h, w = chroma
    if g.shape[-2:] != (fv * h, fh * w):  # outputs cropped away have zero gradient
        g = F.pad(g, (0, fh * w - g.shape[-1], 0, fv * h - g.shape[-2]))
    if w <= 2:
        n, k = g.shape[:2]
        return g.reshape(n, k, h, fv, w, fh).sum((3, 5))
    if fv == 2:
        g = _adjoint_pairs(g)
    return _adjoint_pairs(g.transpose(-1, -2).contiguous()).transpose(-1, -2)
