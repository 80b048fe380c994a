"""The QNT op's numerical constants for Python, written once.

The pure-PyTorch reference (``gcln_fast/reference.py``) and the Triton kernels
(``gcln_fast.kernels``) take their DCT matrix entries, the tie window of the
rounding rule and the sine surrogate's polynomials from here; the C++/CUDA
kernels have the same numbers in ``csrc/qnt_block.h``. ``docs/qnt-op.md`` is the
contract they implement.
"""

from __future__ import annotations

import math

BLOCK = 8

# HALF_COS[k] = cos(k pi / 16) / 2: the magnitudes of the DCT matrix's entries (D[0][n] = HALF_COS[4] = sqrt(1/8)).
HALF_COS = tuple(0.5 * math.cos(k * math.pi / 16) for k in range(BLOCK))


def dct_rows() -> list[list[float]]:
    """The orthonormal 8x8 DCT-II matrix ``D[k][n] = c_k sqrt(2/8) cos(pi k (2n + 1) / 16)`` in float64."""
    d = [[0.5 * math.cos(math.pi * k * (2 * n + 1) / 16) for n in range(BLOCK)] for k in range(BLOCK)]
    d[0] = [math.sqrt(0.125)] * BLOCK
    return d


# The rounding rule R(u) = rint(rint(TIE_GRID * u) / TIE_GRID): u first goes to the nearest
# multiple of 1/512, so a u within TIE_HALF_WIDTH = 2**-10 of a half-integer (edges included)
# becomes that half-integer and then goes to the even neighbour.
TIE_GRID = 512.0
TIE_HALF_WIDTH = 0.5 / TIE_GRID

# The smallest step, relative to scale, that the op accepts: q >= scale * Q_MIN_RELATIVE keeps
# scale / q <= 2**64, finite in float32 with room for |x| up to ~2**60.
Q_MIN_RELATIVE = 2.0**-64
FLOAT32_MAX = 3.4028234663852886e38

# Sine surrogate: sin(pi t) ~ t * sum(SIN_PI[i] t^(2i)) and cos(pi t) ~ sum(COS_PI[i] t^(2i))
# for |t| <= 1/2 (weighted least-squares fits; max error 5e-9 and 4e-10), evaluated by Horner's rule.
# With t = u - rint(u): sin(2 pi u) = 2 sin(pi t) cos(pi t) and 1 - cos(2 pi u) = 2 sin(pi t)^2.
SIN_PI = (3.141592594593935, -5.1677076550608385, 2.550042863625808, -0.5981084222133332, 0.07733611844825648)
COS_PI = (
    0.9999999998753734,
    -4.934802150819874,
    4.0587095754178275,
    -1.33521663214135,
    0.23495867543651583,
    -0.024431017226697254,
)

SURROGATES = ("identity", "cubic", "sine")
