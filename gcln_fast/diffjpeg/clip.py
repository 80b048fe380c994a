"""The output clip of the codec and its surrogates, and the straight-through helper.

The decoded image is clipped to [0, 1] (libjpeg's range limit). In the forward the clip is
hard unless ``soft_forward`` is set with a non-identity surrogate; its backward is the
identity for the ``"identity"`` surrogate (BPDA: the whole backward is then the adjoint of
the rounding- and clip-free codec) and the slope of :func:`soft_clip` for ``"cubic"`` and
``"sine"``, whose value is also the forward under ``soft_forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Sharpness of the soft clip, in 1/(output unit): at the limits it is off by
# ln(2) / BETA = 0.17 of an 8-bit level, and its slope falls from 1 to 0 within about
# two levels of a limit.
SOFT_CLIP_BETA = 4.0 * 255.0


class _StraightThrough(torch.autograd.Function):
    """Forward ``hard`` (computed from ``t`` without grad), backward the identity."""

    @staticmethod
    def forward(ctx, t, hard):
        return hard

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(t: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward, the gradient passed to ``t`` unchanged in the backward."""
    if not (t.requires_grad and torch.is_grad_enabled()):
        return hard
    return _StraightThrough.apply(t, hard)


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
    """Clip the decoded image ``t`` to [lo, hi] as ``surrogate`` and ``soft_forward`` say."""
    if surrogate != "identity" and soft_forward:
        return soft_clip(t, lo, hi)
    if not (t.requires_grad and torch.is_grad_enabled()):
        return torch.clamp(t, lo, hi)
    if surrogate == "identity":
        return straight_through(t, torch.clamp(t.detach(), lo, hi))
    return _SoftClipGrad.apply(t, lo, hi)
