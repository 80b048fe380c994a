"""Differentiable JPEG on the fused QNT op: :func:`jpeg` and the :class:`DiffJPEG` layer.

Modules: ``tables`` (IJG tables, libjpeg's quality mapping), ``color`` (JFIF colour
conversion), ``sampling`` (chroma subsampling), ``rounding`` (8-bit roundings, clips and
their surrogate gradients), ``codec`` (the functional form), ``layer`` (the module).
"""

from .codec import SURROGATES, jpeg
from .layer import DiffJPEG
from .sampling import SUBSAMPLING
from .tables import IJG_CHROMA, IJG_LUMA, quality_tables

__all__ = ["IJG_CHROMA", "IJG_LUMA", "SUBSAMPLING", "SURROGATES", "DiffJPEG", "jpeg", "quality_tables"]
