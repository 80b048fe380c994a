"""``QuantizedDCT``: the QNT op as a drop-in ``nn.Module`` layer."""

from __future__ import annotations

import torch
from torch import nn

from . import _validate
from .ops import BACKENDS, qnt_table


class _FloorQ(torch.autograd.Function):
    """``max(q, q_min)`` whose gradient is blocked only where it would push q further below the floor.

    A plain clamp would freeze a step that one large update put below the floor
    (zero gradient there); passing the gradient unconditionally would let it drift
    away. This keeps a step under the floor recoverable by the next update that
    wants it larger, like a projected gradient step.
    """

    @staticmethod
    def forward(ctx, q, q_min):
        below = q < q_min
        ctx.save_for_backward(below)
        return torch.where(below, torch.full_like(q, q_min), q)

    @staticmethod
    def backward(ctx, grad):
        (below,) = ctx.saved_tensors
        return torch.where(below & (grad > 0), torch.zeros_like(grad), grad), None


class QuantizedDCT(nn.Module):
    """Blockwise 8x8 DCT, ``q * R(Z / q)``, inverse DCT (the paper's QNT layer).

    Input and output: (N, C, H, W) float tensors in the same units (``[0, 1]``
    images by default); ``q`` is in units of ``x * scale`` (8-bit pixel levels
    when ``scale=255``). See ``docs/qnt-op.md`` for the exact contract.

    Args:
        q: initial step (a number, or a tensor of the chosen table shape).
        per_frequency: hold one step per DCT frequency, an (8, 8) table.
        channels: hold one (8, 8) table per channel: a (channels, 8, 8) table.
        trainable: make ``q`` a plain parameter that receives the step-size
            gradient; the op uses ``max(q, q_min)``. Otherwise ``q`` is a buffer.
        scale: multiplier applied before the transform.
        backend: see :func:`gcln_fast.available_backends`; ``"auto"`` picks the
            fused kernel for the input's device.
        surrogate: ``"identity"`` (straight-through), ``"cubic"`` or ``"sine"``:
            the rounding surrogate of the backward (settable, e.g. for an
            adaptive attack).
        soft_forward: use the surrogate in the forward pass too (settable).
        q_min: the floor of a trainable ``q`` (default 1e-3).
        lsq_grad_scale: scale ``grad_q`` as LSQ does (:func:`gcln_fast.ops.lsq_grad_factor`).
    """

    def __init__(
        self,
        q=10.0,
        *,
        per_frequency=False,
        channels=None,
        trainable=False,
        scale=255.0,
        backend="auto",
        surrogate="identity",
        soft_forward=False,
        q_min=1e-3,
        lsq_grad_scale=False,
    ):
        super().__init__()
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        self.scale = _validate.check_scale(scale)
        self.backend = backend
        self.surrogate = surrogate
        self.soft_forward = soft_forward
        self.channels = channels
        self.trainable = bool(trainable)
        self.lsq_grad_scale = bool(lsq_grad_scale)
        shape = (channels, 8, 8) if channels is not None else (8, 8) if per_frequency else ()
        table = self._initial_table(q, shape)
        self.q_min = self._check_q_min(q_min, table)
        if self.trainable:
            self.q = nn.Parameter(table)
        else:
            self.register_buffer("q", table)
        self.register_load_state_dict_pre_hook(_from_log_parametrization)

    def _initial_table(self, q, shape) -> torch.Tensor:
        table = torch.as_tensor(q, dtype=torch.float32).detach().clone()
        if table.dim() == 0:
            table = table.expand(shape).clone()
        if tuple(table.shape) != shape:
            raise ValueError(f"q must be a number or a tensor of shape {shape}, got shape {tuple(table.shape)}")
        _validate.check_q_values(table, self.scale)
        return table

    def _check_q_min(self, q_min, table) -> float:
        if isinstance(q_min, bool) or not isinstance(q_min, (int, float)):
            raise TypeError(f"q_min must be a number, got {type(q_min).__name__}")
        lo, hi = _validate.q_bounds(self.scale)
        if not lo <= q_min <= hi:
            raise ValueError(f"q_min must be in [{lo:.3g}, {hi:.8g}], got {q_min!r}")
        if self.trainable and bool((table < q_min).any()):
            raise ValueError(f"q must be >= q_min={q_min:g} for a trainable layer, got min {table.min().item():g}")
        return float(q_min)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    @property
    def surrogate(self) -> str:
        return self._surrogate

    @surrogate.setter
    def surrogate(self, value) -> None:
        self._surrogate = _validate.check_surrogate(value)

    @property
    def soft_forward(self) -> bool:
        return self._soft_forward

    @soft_forward.setter
    def soft_forward(self, value) -> None:
        self._soft_forward = _validate.check_soft_forward(value)

    def _table(self, x: torch.Tensor) -> torch.Tensor:
        # Values were checked at construction; a trainable q is floored instead
        # (checking every call would cost a host sync per forward on a GPU).
        q = self.q.to(device=x.device)
        if self.trainable:
            q = _FloorQ.apply(q, self.q_min)
        return _validate.canonical_q(q, x, self.scale, check_values=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _validate.check_x(x)
        table = self._table(x)
        return qnt_table(x, table, self.scale, self.backend, self.surrogate, self.soft_forward, self.lsq_grad_scale)

    def extra_repr(self) -> str:
        q = self.q.detach()
        if q.dim() == 0:
            qs = f"q={q.item():g}"
        else:
            qs = f"q=table{tuple(q.shape)}[min={q.min().item():.3g}, max={q.max().item():.3g}]"
        extra = f", q_min={self.q_min:g}" if self.trainable else ""
        return (
            f"{qs}, scale={self.scale:g}, trainable={self.trainable}{extra}, backend={self.backend!r}, "
            f"surrogate={self.surrogate!r}, soft_forward={self.soft_forward}"
        )


def _from_log_parametrization(module, state_dict, prefix, *args) -> None:
    """Load checkpoints of the first edition, which stored a trainable q as ``log q`` under parametrize."""
    old = prefix + "parametrizations.q.original"
    if old in state_dict:
        state_dict[prefix + "q"] = state_dict.pop(old).exp()
