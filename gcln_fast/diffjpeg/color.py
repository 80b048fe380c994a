"""JFIF RGB <-> YCbCr with libjpeg's 16-bit fixed-point coefficients (jccolor.c, jdcolor.c).

The encoder computes ``(FIX(a) R + FIX(b) G + FIX(c) B + bias) >> 16`` per component, the
decoder adds ``(FIX(a) Cb + FIX(b) Cr + ONE_HALF) >> 16`` to Y per RGB channel. As float32
matrices over 65536 they give the same values: for 8-bit inputs every product and partial
sum is an integer multiple of 2**-16 below 2**8, which float32 holds exactly, so
``floor`` of the biased product is libjpeg's integer result bit for bit.
"""

from __future__ import annotations

import torch

_ONE = 65536.0  # 1 << SCALEBITS
# FIX(x) = round(x * 65536) of the JFIF coefficients, as jccolor.c's tables hold them.
RGB_TO_YCC = (
    (19595.0, 38470.0, 7471.0),  # Y  = 0.29900 R + 0.58700 G + 0.11400 B
    (-11059.0, -21709.0, 32768.0),  # Cb = -0.16874 R - 0.33126 G + 0.50000 B (+ 128)
    (32768.0, -27439.0, -5329.0),  # Cr = 0.50000 R - 0.41869 G - 0.08131 B (+ 128)
)
# Level-shifted outputs (Y - 128, Cb - 128, Cr - 128: what the DCT sees) with jccolor.c's
# rounding bias, ONE_HALF for Y and ONE_HALF - 1 for the chroma: floor(v + bias) is libjpeg's.
ENCODE_BIAS_EXACT = (0.5 - 128.0, 0.5 - 1.0 / _ONE, 0.5 - 1.0 / _ONE)
ENCODE_BIAS_FLOAT = (-128.0, 0.0, 0.0)
# jdcolor.c: R = Y + Cr_r_tab[Cr], G = Y + ((Cb_g + Cr_g) >> 16), B = Y + Cb_b_tab[Cb], each
# table entry rounded with ONE_HALF (Cb, Cr level-shifted).
YCC_TO_RGB = (
    (0.0, 91881.0),  # R: 1.40200 Cr
    (-22554.0, -46802.0),  # G: -0.34414 Cb - 0.71414 Cr
    (116130.0, 0.0),  # B: 1.77200 Cb
)


def matrix(values, like: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """One of the fixed-point matrices above as a tensor of ``like``'s dtype and device, times ``scale / 65536``."""
    return torch.tensor(values, dtype=like.dtype, device=like.device) * (scale / _ONE)


def vector(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)
