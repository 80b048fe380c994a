"""Parity checks between a QNT backend and the reference (``shared/design/qnt-op.md``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gcln_fast.reference import qnt_coefficients

# One unit in the last place of the output dtype near 1.0, plus float32 round-off.
ULP = {torch.float32: 2e-6, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}


def q_table_for(q, channels: int) -> torch.Tensor:
    """Any accepted form of q as a float32 (C, 8, 8) tensor."""
    q = torch.as_tensor(q, dtype=torch.float32)
    return q.expand(channels, 8, 8) if q.dim() < 3 else q


def _block_any(mask: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) bool -> (N, C, Hb, Wb): does the 8x8 block contain a True."""
    h, w = mask.shape[-2:]
    m = F.pad(mask.float(), (0, (-w) % 8, 0, (-h) % 8))
    return F.max_pool2d(m, 8) > 0


def assert_qnt_close(y, y_ref, x, q, scale=255.0, *, max_flip_fraction=1e-4):
    """``y`` agrees with ``y_ref`` to round-off except in blocks with a rounding-boundary flip.

    A flip (one coefficient landing on the neighbouring quantisation level) is
    accepted only in blocks where the reference has a coefficient within
    float32 round-off of a rounding boundary, and in at most
    ``max_flip_fraction`` of all coefficients (at least two blocks).
    """
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype, (y.shape, y.dtype, y_ref.shape, y_ref.dtype)
    yf, rf = y.float(), y_ref.float()
    same_nan = torch.isnan(yf) == torch.isnan(rf)
    assert bool(same_nan.all()), "NaN positions differ"
    tol = ULP[y.dtype] * (1.0 + rf.abs())
    bad = ((yf - rf).abs() > tol) & ~torch.isnan(rf)
    if not bool(bad.any()):
        return
    flipped = _block_any(bad)
    allowed = max(2, math.ceil(max_flip_fraction * x.numel()))
    assert int(flipped.sum()) <= allowed, f"{int(flipped.sum())} blocks differ (allowed {allowed}); max diff {(yf - rf).abs().max()}"
    t = qnt_coefficients(x, scale) / q_table_for(q, x.shape[1]).to(x.device)[None, :, None, None]
    boundary_distance = ((t - t.floor()) - 0.5).abs()
    near = (boundary_distance < 1e-3 + 1e-6 * t.abs()).flatten(-2).any(-1)
    assert bool(near[flipped].all()), f"blocks differ without a coefficient near a rounding boundary: max diff {(yf - rf).abs().max()}"
