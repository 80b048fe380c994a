"""Chroma subsampling as libjpeg-turbo does it (jcsample.c, jdsample.c).

Downsampling is the box average of each 2x2 (4:2:0) or 1x2 (4:2:2) group. At the edges
libjpeg completes the full-resolution image before averaging: its last column is
replicated to the width of whole chroma blocks (16-pixel MCUs, ``expand_right_edge``) and
its last row to an even height (``expand_bottom_edge``); the chroma plane's rows are then
replicated to whole blocks, which the QNT op's own edge replication does. So the chroma
columns past the image come from the last image column alone, not from the last chroma
column. libjpeg rounds the average with an alternating bias (``(sum + 1, 2, 1, 2, ...) >> 2``
and ``(sum + 0, 1, 0, 1, ...) >> 1`` along a row).

Upsampling is libjpeg's default "fancy" triangle filter: each output sample is 3/4 of the
nearer and 1/4 of the further input sample along every upsampled axis, edges replicated,
which is exactly bilinear interpolation with ``align_corners=False``; libjpeg rounds it with
the biases 8, 7, 8, 7, ... (``>> 4``, 4:2:0) and 1, 2, 1, 2, ... (``>> 2``, 4:2:2) along a
row. A component at most two samples wide is upsampled by replication instead (libjpeg
uses its box upsampler there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .rounding import floor_ste

SUBSAMPLING = ("4:2:0", "4:2:2", "4:4:4")
# (vertical, horizontal) factor of the chroma grid.
FACTORS = {"4:2:0": (2, 2), "4:2:2": (1, 2), "4:4:4": (1, 1)}
# Rounding biases of even and odd output columns, as fractions of the divisor.
_DOWN_BIAS = {"4:2:0": (1 / 4, 2 / 4), "4:2:2": (0.0, 1 / 2)}
_UP_BIAS = {"4:2:0": (8 / 16, 7 / 16), "4:2:2": (1 / 4, 2 / 4)}


def _column_bias(pair: tuple[float, float], width: int, like: torch.Tensor) -> torch.Tensor:
    bias = torch.tensor(pair, dtype=like.dtype, device=like.device).repeat((width + 1) // 2)[:width]
    return bias.reshape(1, 1, 1, width)


def downsample(c: torch.Tensor, mode: str, exact: bool) -> torch.Tensor:
    """(N, K, H, W) full-resolution chroma -> (N, K, ceil(H/fv), 8 * ceil(W/16)): whole chroma blocks wide."""
    fv, fh = FACTORS[mode]
    if (fv, fh) == (1, 1):
        return c
    pad = -c.shape[-1] % (8 * fh)
    if pad:
        c = F.pad(c, (0, pad, 0, 0), mode="replicate")
    # ceil_mode averages a partial edge group (odd height) over its in-image rows only, which
    # equals the average over the group completed by replication.
    avg = F.avg_pool2d(c, (fv, fh), ceil_mode=True)
    if not exact:
        return avg
    return floor_ste(avg + _column_bias(_DOWN_BIAS[mode], avg.shape[-1], avg))


def upsample(c: torch.Tensor, mode: str, size: tuple[int, int], exact: bool) -> torch.Tensor:
    """(N, K, h, w) chroma -> (N, K, H, W) with ``size = (H, W)``, libjpeg's fancy filter."""
    fv, fh = FACTORS[mode]
    if (fv, fh) == (1, 1):
        return c
    c = c[..., : -(-size[0] // fv), : -(-size[1] // fh)]  # the chroma samples inside the image
    if c.shape[-1] <= 2:  # libjpeg's box upsampler: replication
        up = c.repeat_interleave(fv, dim=-2).repeat_interleave(fh, dim=-1)
        return up[..., : size[0], : size[1]]
    up = F.interpolate(c, scale_factor=(fv, fh), mode="bilinear", align_corners=False)
    if exact:
        up = floor_ste(up + _column_bias(_UP_BIAS[mode], up.shape[-1], up))
    return up[..., : size[0], : size[1]]
