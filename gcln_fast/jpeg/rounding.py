"""The 8-bit roundings and clips of a JPEG codec, with their surrogate gradients.

libjpeg works on 8-bit integers: the encoder rounds YCbCr and the box-averaged chroma to
integers, the decoder rounds the inverse DCT, the upsampled chroma and the output colours.
In the hard forward these steps are computed exactly as libjpeg does (``floor`` of a value
plus a bias); their gradient is the identity (straight-through) for every surrogate,
because a pixel-level rounding is not the quantization being studied and a cubic/sine
slope would vanish on 8-bit inputs. With ``soft_forward`` and a non-identity surrogate
they are skipped altogether (the smooth surrogate pipeline).

The clip of the output to [0, 1] is hard in the forward; its backward is the identity for
the ``"identity"`` surrogate and the slope of :func:`soft_clip` for ``"cubic"``/``"sine"``,
whose value is also the forward under ``soft_forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Sharpness of the soft clip, in 1/(output unit): the value at the limits is off by
# ln(2) / BETA = 0.17 of an 8-bit level, and the slope falls from 1 to 0 within about
# two levels of the limit.
SOFT_CLIP_BETA = 4.0 * 255.0


class _StraightThrough(torch.autograd.Function):
    """Forward ``hard`` (a tensor computed from ``t`` without grad), backward the identity."""

    @staticmethod
    def forward(ctx, t, hard):
        return hard

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(t: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward, gradient passed to ``t`` unchanged in the backward."""
    if not (t.requires_grad and torch.is_grad_enabled()):
        return hard
    return _StraightThrough.apply(t, hard)


def floor_ste(t: torch.Tensor) -> torch.Tensor:
    """``floor(t)`` (libjpeg's ``(sum + bias) >> shift`` when ``t`` holds the bias), straight-through."""
    return straight_through(t, torch.floor(t.detach()))


def clamp_ste(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``clamp(t, lo, hi)`` with the identity as its gradient."""
    return straight_through(t, torch.clamp(t.detach(), lo, hi))


def soft_clip(t: torch.Tensor, lo: float = 0.0, hi: float = 1.0, beta: float = SOFT_CLIP_BETA) -> torch.Tensor:
    """Smooth clamp to [lo, hi]: ``lo + (softplus(b (t - lo)) - softplus(b (t - hi))) / b`` with ``b = beta``."""
    return lo + (F.softplus(t - lo, beta=beta) - F.softplus(t - hi, beta=beta))


class _SoftClipGrad(torch.autograd.Function):
    """Forward the hard clamp to [lo, hi], backward the slope of :func:`soft_clip`."""

    @staticmethod
    def forward(ctx, t, lo, hi):
        ctx.save_for_backward(t)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(t, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        slope = torch.sigmoid(SOFT_CLIP_BETA * (t - ctx.lo)) - torch.sigmoid(SOFT_CLIP_BETA * (t - ctx.hi))
        return grad * slope, None, None


def clip_output(t: torch.Tensor, surrogate: str, soft_forward: bool, lo: float = 0.0, hi: float = 1.0):
    """The output clip of the codec for a given surrogate (see the module docstring)."""
    if surrogate == "identity":
        return clamp_ste(t, lo, hi)
    if soft_forward:
        return soft_clip(t, lo, hi)
    if not (t.requires_grad and torch.is_grad_enabled()):
        return torch.clamp(t, lo, hi)
    return _SoftClipGrad.apply(t, lo, hi)


def to_levels(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp to [lo, hi] and round half up to an integer level, straight-through."""
    return straight_through(t, torch.floor(torch.clamp(t.detach(), lo, hi) + 0.5))
