"""Argument checks shared by every backend: clear errors that name the argument."""

from __future__ import annotations

import math
import numbers

import torch

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_x(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.dim()} dimensions {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    return scale


def canonical_q(q, x: torch.Tensor) -> torch.Tensor:
    """Validate ``q`` and return it as a float32 (Cq, 8, 8) tensor, Cq in {1, C}.

    The reshaping is differentiable, so autograd sums ``grad_q`` back to the
    shape the caller gave.
    """
    channels = x.shape[1]
    if isinstance(q, bool) or not isinstance(q, (numbers.Real, torch.Tensor)):
        raise TypeError(f"q must be a number or a tensor, got {type(q).__name__}")
    if not isinstance(q, torch.Tensor):
        if not (math.isfinite(q) and q > 0):
            raise ValueError(f"q must be positive and finite, got {q}")
        return torch.full((1, 8, 8), float(q), dtype=torch.float32, device=x.device)
    if q.is_complex() or not q.is_floating_point():
        raise TypeError(f"q must be a floating-point tensor, got {q.dtype}")
    if q.device != x.device:
        raise ValueError(f"q is on {q.device} but x is on {x.device}; move q to x's device")
    if q.dim() == 0:
        table = q.to(torch.float32).expand(1, 8, 8)
    elif q.shape == (8, 8):
        table = q.to(torch.float32).unsqueeze(0)
    elif q.dim() == 3 and q.shape[1:] == (8, 8) and q.shape[0] == channels:
        table = q.to(torch.float32)
    else:
        raise ValueError(
            f"q must be a number, a 0-d tensor, an (8, 8) table or a (C={channels}, 8, 8) table, "
            f"got shape {tuple(q.shape)}"
        )
    # Value checks need the data: skipped while tracing (the compiled kernels
    # check again where they can do it for free).
    if not _compiling():
        with torch.no_grad():
            bad = ~(torch.isfinite(table) & (table > 0))
            if bool(bad.any()):
                raise ValueError(f"q must be positive and finite everywhere, got min {table.min().item()}")
    return table.contiguous()
