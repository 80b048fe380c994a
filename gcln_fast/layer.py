"""``QuantizedDCT``: the QNT op as a drop-in ``nn.Module`` layer."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import _validate
from .ops import BACKENDS, qnt_table


class _Exp(nn.Module):
    """Keeps a trainable step positive: the stored parameter is ``log q``."""

    def forward(self, log_q):
        return log_q.exp()

    def right_inverse(self, q):
        return q.log()


class QuantizedDCT(nn.Module):
    """Blockwise 8x8 DCT, ``round(Z / q) * q``, inverse DCT (the paper's QNT layer).

    Input and output: (N, C, H, W) float tensors in the same units (``[0, 1]``
    images by default); ``q`` is in units of ``x * scale`` (8-bit pixel levels
    when ``scale=255``).

    Args:
        q: initial step (a number, or a tensor of the chosen table shape).
        per_frequency: learn/hold one step per DCT frequency, an (8, 8) table.
        channels: hold one (8, 8) table per channel: a (channels, 8, 8) table.
        trainable: make ``q`` a parameter (kept positive: it is stored as
            ``log q`` through ``torch.nn.utils.parametrize``) that receives the
            LSQ step-size gradient; otherwise ``q`` is a buffer.
        scale: multiplier applied before the transform.
        backend: see :func:`gcln_fast.available_backends`; ``"auto"`` picks the
            fused kernel for the input's device.
    """

    def __init__(self, q=10.0, *, per_frequency=False, channels=None, trainable=False, scale=255.0, backend="auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        self.scale = _validate.check_scale(scale)
        self.backend = backend
        self.channels = channels
        if channels is not None:
            shape = (channels, 8, 8)
        elif per_frequency:
            shape = (8, 8)
        else:
            shape = ()
        table = torch.as_tensor(q, dtype=torch.float32).detach().clone()
        if table.dim() == 0:
            table = table.expand(shape).clone()
        if tuple(table.shape) != shape:
            raise ValueError(f"q must be a number or a tensor of shape {shape}, got shape {tuple(table.shape)}")
        if not bool(torch.isfinite(table).all() and (table > 0).all()):
            raise ValueError("q must be positive and finite")
        self.trainable = bool(trainable)
        if self.trainable:
            self.q = nn.Parameter(table)
            parametrize.register_parametrization(self, "q", _Exp())
        else:
            self.register_buffer("q", table)

    def _table(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q.to(device=x.device)
        if q.dim() == 0:
            return q.expand(1, 8, 8)
        if q.dim() == 2:
            return q.unsqueeze(0)
        if q.shape[0] != x.shape[1]:
            raise ValueError(f"this layer holds q tables for {q.shape[0]} channels, the input has {x.shape[1]}")
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.check_x(x)
        return qnt_table(x, self._table(x).contiguous(), self.scale, self.backend)

    def extra_repr(self) -> str:
        q = self.q.detach()
        if q.dim() == 0:
            qs = f"q={q.item():g}"
        else:
            qs = f"q=table{tuple(q.shape)}[min={q.min().item():.3g}, max={q.max().item():.3g}]"
        return f"{qs}, scale={self.scale:g}, trainable={self.trainable}, backend={self.backend!r}"
