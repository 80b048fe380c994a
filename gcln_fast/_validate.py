"""Argument checks shared by every backend: clear errors that name the argument.

:func:`canonical_q` is the one place that turns a user's ``q`` into the
canonical ``(Nq, Cq, 8, 8)`` table (``docs/qnt-op.md``, "Tables").
"""

from __future__ import annotations

import numbers

import torch

from .qnt_constants import BLOCK, FLOAT32_MAX, Q_MIN_RELATIVE, SURROGATES

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_x(x, *, allow_float64: bool = False) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.dim()} dimensions {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES and not (allow_float64 and x.dtype == torch.float64):
        allowed = "float32, float16, bfloat16" + (" or float64" if allow_float64 else "")
        raise TypeError(f"x must be {allowed}, got {x.dtype}")


def check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if not 0 < scale <= FLOAT32_MAX:  # also false for NaN
        raise ValueError(f"scale must be positive and finite in float32, got {scale}")
    return scale


def check_surrogate(surrogate) -> str:
    if not isinstance(surrogate, str) or surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    return surrogate


def check_soft_forward(soft_forward) -> bool:
    if not isinstance(soft_forward, bool):
        raise TypeError(f"soft_forward must be a bool, got {type(soft_forward).__name__}")
    return soft_forward


def q_bounds(scale: float) -> tuple[float, float]:
    """The accepted range of q: at least ``scale * 2**-64`` (so that scale / q stays finite in
    float32, with room to spare), at most the float32 maximum."""
    return scale * Q_MIN_RELATIVE, FLOAT32_MAX


def _bounds_message(scale: float) -> str:
    lo, hi = q_bounds(scale)
    return f"q must be finite and in [scale * 2**-64 = {lo:.3g}, {hi:.8g}] (float32 max)"


def check_q_values(table: torch.Tensor, scale: float) -> None:
    """Raise a ValueError naming q if any entry of ``table`` is out of bounds (or NaN)."""
    lo, hi = q_bounds(scale)
    with torch.no_grad():
        table = table.double()  # a float16 q must not meet the bounds rounded to float16
        bad = ~((table >= lo) & (table <= hi))
        if bool(bad.any()):
            worst = table[bad].flatten()[0].item()
            raise ValueError(f"{_bounds_message(scale)}, got {worst!r}")


def _table_shape(q: torch.Tensor, x: torch.Tensor) -> tuple[int, int]:
    """(Nq, Cq) of the canonical table for a tensor q, or a ValueError naming the accepted forms."""
    n, c = x.shape[:2]
    if q.dim() == 0:
        return 1, 1
    if q.shape[-2:] == (BLOCK, BLOCK):
        if q.dim() == 2:
            return 1, 1
        if q.dim() == 3 and q.shape[0] == c:
            return 1, c
        if q.dim() == 4 and q.shape[0] in (1, n) and q.shape[1] in (1, c):
            return q.shape[0], q.shape[1]
    raise ValueError(
        f"q must be a number, a 0-d tensor, an (8, 8) table, a (C={c}, 8, 8) per-channel table or an "
        f"(N={n}, 1 or C={c}, 8, 8) per-sample table, got shape {tuple(q.shape)}"
    )


def check_table(table, x: torch.Tensor) -> None:
    """A table given in canonical form (``QNTFunction``): float32 (Nq, Cq, 8, 8) on x's device."""
    if not isinstance(table, torch.Tensor) or table.dtype != torch.float32:
        raise TypeError(f"q_table must be a float32 tensor, got {getattr(table, 'dtype', type(table).__name__)}")
    if table.dim() != 4:
        raise ValueError(f"q_table must have the canonical shape (Nq, Cq, 8, 8), got {tuple(table.shape)}")
    if table.device != x.device:
        raise ValueError(f"q_table is on {table.device} but x is on {x.device}")
    _table_shape(table, x)


def canonical_q(
    q, x: torch.Tensor, scale: float, dtype: torch.dtype = torch.float32, *, check_values: bool = True
) -> torch.Tensor:
    """Validate ``q`` and return it as a contiguous ``(Nq, Cq, 8, 8)`` tensor of ``dtype``.

    ``Nq`` is 1 or N (per-sample), ``Cq`` 1 or C (per-channel). The reshaping is
    differentiable, so autograd sums ``grad_q`` back to the shape the caller gave.
    The value checks also run under ``torch.compile`` (see :func:`_checked`).
    """
    if isinstance(q, bool) or not isinstance(q, (numbers.Real, torch.Tensor)):
        raise TypeError(f"q must be a number or a tensor, got {type(q).__name__}")
    if not isinstance(q, torch.Tensor):
        if torch.compiler.is_compiling() and check_values:  # q may be symbolic: check at run time
            table = torch.full((1, 1, BLOCK, BLOCK), q, dtype=torch.float64, device=x.device)
            return _checked(table, scale).to(dtype)
        lo, hi = q_bounds(scale)
        if check_values and not lo <= q <= hi:  # also false for NaN
            raise ValueError(f"{_bounds_message(scale)}, got {q!r}")
        return torch.full((1, 1, BLOCK, BLOCK), q, dtype=dtype, device=x.device)
    if q.is_complex() or not q.is_floating_point():
        raise TypeError(f"q must be a floating-point tensor, got {q.dtype}")
    if q.device != x.device:
        raise ValueError(f"q is on {q.device} but x is on {x.device}; move q to x's device")
    nq, cq = _table_shape(q, x)
    table = (q.expand(BLOCK, BLOCK) if q.dim() == 0 else q).reshape(nq, cq, BLOCK, BLOCK)
    if check_values:  # on q's own values, before a conversion could turn 1e39 into inf
        table = _checked(table, scale)
    return table.to(dtype).contiguous()


def _checked(table: torch.Tensor, scale: float) -> torch.Tensor:
    # Eagerly the check is plain Python. A traced graph cannot branch on the
    # data, so under torch.compile it is an opaque op that checks at run time.
    if torch.compiler.is_compiling():
        return torch.ops.gcln_fast.qnt_checked_q(table, scale)
    check_q_values(table, scale)
    return table


@torch.library.custom_op("gcln_fast::qnt_checked_q", mutates_args=())
def _checked_q(table: torch.Tensor, scale: float) -> torch.Tensor:
    """``table`` (a copy: custom ops return no aliases) after :func:`check_q_values`."""
    check_q_values(table, scale)
    return table.clone()


@_checked_q.register_fake
def _(table, scale):
    return torch.empty_like(table)


def _checked_q_backward(ctx, grad):
    return grad, None


_checked_q.register_autograd(_checked_q_backward)
