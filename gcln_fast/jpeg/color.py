"""JFIF RGB <-> YCbCr with libjpeg's 16-bit fixed-point coefficients (jccolor.c, jdcolor.c).

Values are 8-bit levels. YCbCr is returned *level-shifted* (``Y - 128``, ``Cb - 128``,
``Cr - 128``): that is what the DCT sees, and the chroma's +128 offset and the luma's -128
shift cancel for Cb and Cr. With ``exact=True`` each output is rounded as libjpeg rounds it
(``(sum + bias) >> 16``), which for 8-bit inputs reproduces libjpeg-turbo bit for bit:
every product and partial sum is an integer times a power of two below 2**24, so float32
holds it exactly. The roundings are straight-through in the backward
(:mod:`gcln_fast.jpeg.rounding`).
"""

from __future__ import annotations

import torch

from .rounding import floor_ste

_ONE = 65536.0  # 1 << SCALEBITS
# FIX(x) = round(x * 65536) of the JFIF coefficients, as the tables of jccolor.c hold them.
_RGB_TO_YCC = (
    (19595.0, 38470.0, 7471.0),  # Y  = 0.29900 R + 0.58700 G + 0.11400 B
    (-11059.0, -21709.0, 32768.0),  # Cb = -0.16874 R - 0.33126 G + 0.50000 B (+ 128)
    (32768.0, -27439.0, -5329.0),  # Cr = 0.50000 R - 0.41869 G - 0.08131 B (+ 128)
)
# jccolor.c adds ONE_HALF to Y and ONE_HALF - 1 to Cb/Cr before the shift; in level-shifted
# units that is floor(v + 0.5) for Y - 128 and floor(v + 0.5 - 2**-16) for the chroma.
_ENCODE_ROUNDING = (0.5, 0.5 - 1.0 / _ONE, 0.5 - 1.0 / _ONE)
# jdcolor.c: R = Y + Cr_r_tab[Cr], G = Y + ((Cb_g + Cr_g) >> 16), B = Y + Cb_b_tab[Cb].
_YCC_TO_RGB = (
    (0.0, 91881.0),  # R: 1.40200 Cr
    (-22554.0, -46802.0),  # G: -0.34414 Cb - 0.71414 Cr
    (116130.0, 0.0),  # B: 1.77200 Cb
)


def _mix(v: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``out[:, o] = sum_c matrix[o, c] * v[:, c] + bias[o]`` for (N, C, H, W) ``v``, as one batched matmul."""
    n, c, h, w = v.shape
    o = matrix.shape[0]
    flat = torch.baddbmm(bias.reshape(1, o, 1).expand(n, o, 1), matrix.expand(n, o, c), v.reshape(n, c, h * w))
    return flat.reshape(n, o, h, w)


def _constants(values, v: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=v.dtype, device=v.device)


def rgb_to_ycc(rgb: torch.Tensor, exact: bool) -> torch.Tensor:
    """(N, 3, H, W) RGB levels in [0, 255] -> level-shifted (N, 3, H, W) YCbCr."""
    matrix = _constants(_RGB_TO_YCC, rgb) / _ONE
    shift = _constants((-128.0, 0.0, 0.0), rgb)
    if not exact:
        return _mix(rgb, matrix, shift)
    # The rounding bias rides in the matmul (exactly: every term is a multiple of 2**-16 below 2**8).
    return floor_ste(_mix(rgb, matrix, shift + _constants(_ENCODE_ROUNDING, rgb)))


def ycc_to_rgb(y: torch.Tensor, cbcr: torch.Tensor, exact: bool) -> torch.Tensor:
    """Y (N, 1, H, W) in levels and level-shifted CbCr (N, 2, H, W) -> RGB levels (N, 3, H, W), not clipped.

    ``exact``: the chroma terms are rounded as jdcolor.c's tables round them (Y and CbCr
    are then expected to be integers, as libjpeg's decoded samples are).
    """
    matrix = _constants(_YCC_TO_RGB, cbcr) / _ONE
    if not exact:
        return _mix(cbcr, matrix, torch.zeros_like(matrix[:, 0])) + y
    return floor_ste(_mix(cbcr, matrix, torch.full_like(matrix[:, 0], 0.5))) + y
