"""Differentiable JPEG on the fused QNT op: :func:`jpeg` and the :class:`DiffJPEG` layer."""

from .codec import jpeg

__all__ = ["jpeg"]
