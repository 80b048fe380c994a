"""Parity checks between a QNT backend and the reference (``shared/design/qnt-op.md``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gcln_fast import QuantizedDCT
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


def make_q(form, channels, seed=0):
    """q in one of the accepted forms (on the CPU): a number, a 0-d tensor, an (8, 8) or a (C, 8, 8) table."""
    g = torch.Generator().manual_seed(seed)
    if form == "scalar":
        return 10.0
    if form == "tensor0d":
        return torch.tensor(6.5)
    if form == "freq":
        return torch.rand(8, 8, generator=g) * 30 + 2
    return torch.rand(channels, 8, 8, generator=g) * 30 + 2


def rand(shape, dtype=torch.float32, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def randn(shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def check_compile_fullgraph(device: str, backend: str, trainable: bool) -> None:
    """torch.compile(fullgraph=True) of a model using the layer matches eager, and so does grad_q."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1),
        torch.nn.Sigmoid(),
        QuantizedDCT(10.0, per_frequency=True, trainable=trainable, backend=backend),
        torch.nn.Conv2d(3, 2, 3, padding=1),
    ).to(device)
    x = rand((2, 3, 20, 20)).to(device)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    if trainable:
        q_param = model[2].parametrizations.q.original
        grads = []
        for fn in (model, compiled):
            q_param.grad = None
            fn(x).square().sum().backward()
            grads.append(q_param.grad.clone())
        torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-3)
