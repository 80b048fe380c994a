"""gcln_fast: the quantized DCT transform (QNT) of GCLN as fused kernels, and the GCLN defence.

Entry points: :func:`qnt` (functional), :class:`QuantizedDCT` (layer),
:class:`QNTFunction` (autograd Function), :func:`available_backends`,
:func:`qnt_reference` (the pure-PyTorch ground truth).
"""

from .diffjpeg import DiffJPEG, jpeg
from .layer import QuantizedDCT
from .ops import QNTFunction, available_backends, qnt, qnt_backward
from .qnt_constants import SURROGATES
from .reference import dct_matrix, qnt_reference

__all__ = [
    "DiffJPEG",
    "jpeg",
    "SURROGATES",
    "QuantizedDCT",
    "QNTFunction",
    "available_backends",
    "dct_matrix",
    "qnt",
    "qnt_backward",
    "qnt_reference",
]
__version__ = "0.1.0"
