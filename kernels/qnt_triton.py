"""The Triton backend of the QNT op (``docs/qnt-op.md``): host launchers and ``torch.library`` ops.

Ops (registered with :func:`torch.library.triton_op`, the kernels launched through
:func:`torch.library.wrap_triton`, so ``torch.compile`` traces into them; under
``TRITON_INTERPRET=1`` opaque custom ops instead, since torch cannot trace interpreted
kernels; their autograd is registered by ``gcln_fast/ops.py``)::

    gcln_fast::qnt_triton(Tensor x, Tensor q, float scale, str surrogate, bool soft_forward) -> Tensor
    gcln_fast::qnt_backward_triton(Tensor grad_y, Tensor x, Tensor q, float scale, str surrogate,
                                   bool soft_forward, bool need_grad_x, bool need_grad_q) -> (Tensor, Tensor)

``q`` is the canonical float32 (Nq, Cq, 8, 8) table. The package's modules: ``device``
(the ``@triton.jit`` helpers every kernel shares: DCT, rounding, surrogates, tiles),
``forms`` (the ``dot`` and ``separable`` kernels), ``butterfly`` (the generator of the
``butterfly`` kernels), ``autotune`` (their launch configurations) and this one.

The kernel form is the ``variant`` argument of :func:`launch_qnt` /
:func:`launch_backward`; the ops use ``DEFAULT_VARIANT`` (``GCLN_FAST_TRITON_VARIANT``
overrides it, for benchmarks). No form has been timed on a GPU yet
(``bench/bench_triton_variants.py`` does that). What compiling each for sm_90 without a
GPU showed (the first edition's kernels, ptxas register/spill report, not a timing):
``dot`` (ieee) used 255 registers with 0.7-4 KB of spills per thread, ``separable``
168-181 registers and no spills, ``butterfly`` 255 registers with ~100 B of spills but
the fewest operations. ``separable`` is the default until a benchmark says otherwise:
plain module-level kernels and quick compiles.

Importing this module raises ImportError where Triton is absent.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"gcln_fast.kernels.qnt_triton needs Triton: {exc}") from exc

from torch.library import triton_op, wrap_triton

from gcln_fast import _validate
from gcln_fast.qnt_constants import SURROGATES

from .autotune import BACKWARD, FORWARD, INTERPRET, VARIANTS, program_blocks

DEFAULT_VARIANT = os.environ.get("GCLN_FAST_TRITON_VARIANT", "separable")
DOT_PRECISIONS = ("ieee", "tf32x3")
DEFAULT_DOT_PRECISION = "ieee"

if DEFAULT_VARIANT not in VARIANTS:
    raise ImportError(f"GCLN_FAST_TRITON_VARIANT must be one of {VARIANTS}, got {DEFAULT_VARIANT!r}")


def _check(x, q, scale, surrogate, soft_forward, variant, precision) -> tuple[float, int]:
    """The ops' argument checks (shapes, dtypes, devices, names; no data-dependent check, so no
    device sync): (scale, surrogate as the kernels' int)."""
    _validate.check_x(x)
    _validate.check_table(q, x)
    scale = _validate.check_scale(scale)
    _validate.check_surrogate(surrogate)
    _validate.check_soft_forward(soft_forward)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if precision not in DOT_PRECISIONS:
        raise ValueError(f"precision must be one of {DOT_PRECISIONS}, got {precision!r}")
    return scale, SURROGATES.index(surrogate)


def _use_libdevice(t: torch.Tensor) -> bool:
    return not INTERPRET and t.device.type == "cuda"


def _table_strides(q: torch.Tensor) -> tuple[int, int]:
    """(QSN, QSC): block (n, c) uses table n * QSN + c * QSC."""
    nq, cq = q.shape[:2]
    return (cq if nq > 1 else 0), (1 if cq > 1 else 0)


def launch_qnt(x, q, scale, surrogate="identity", soft_forward=False, *, variant=DEFAULT_VARIANT,
               precision=DEFAULT_DOT_PRECISION, wrap=None) -> torch.Tensor:  # fmt: skip
    """The forward on ``x`` (N, C, H, W) with the canonical table ``q``; ``wrap`` is applied to the
    kernel before launching (``wrap_triton`` inside the op)."""
    scale, s = _check(x, q, scale, surrogate, soft_forward, variant, precision)
    q = q.contiguous()
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    hb, wb = triton.cdiv(h, 8), triton.cdiv(w, 8)
    m = n * c * hb * wb
    kernel = FORWARD[variant] if wrap is None else wrap(FORWARD[variant])

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCKS"] * meta["TILES"]),)

    kernel[grid](
        x, y, q,
        m, c, h, w, hb, wb, *_table_strides(q),
        *x.stride(),
        *y.stride(),
        scale, 1.0 / scale,
        SURROGATE=s, SOFT=bool(soft_forward and s != 0),
        SEP=variant == "separable", PRECISION=precision, USE_LIBDEVICE=_use_libdevice(x),
    )  # fmt: skip
    return y


def launch_backward(grad_y, x, q, scale, surrogate="identity", soft_forward=False, need_grad_x=True,
                    need_grad_q=True, *, variant=DEFAULT_VARIANT, precision=DEFAULT_DOT_PRECISION,
                    wrap=None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(grad_x, grad_q) in one pass over ``x``; an output not wanted is an empty (0,) tensor.

    grad_q is deterministic: one group of programs per table (per-sample: each image's
    blocks only), per-program partial sums in a buffer, then a fixed-order ``sum``.
    The soft forward has the same backward (``docs/qnt-op.md``)."""
    scale, s = _check(x, q, scale, surrogate, soft_forward, variant, precision)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y must have x's shape {tuple(x.shape)}, got {tuple(grad_y.shape)}")
    q = q.contiguous()
    n, c, h, w = x.shape
    nq, cq = q.shape[:2]
    gx = torch.empty_like(x) if need_grad_x else x.new_empty(0)
    if x.numel() == 0 or not (need_grad_x or need_grad_q):
        return gx, (torch.zeros_like(q) if need_grad_q else q.new_empty(0))
    gy = grad_y if grad_y.dtype == x.dtype else grad_y.to(x.dtype)
    hb, wb = triton.cdiv(h, 8), triton.cdiv(w, 8)
    # Groups: one per table when grad_q is wanted (samples from n0 = (g // gcq) * gn1,
    # channels from c0 = (g % gcq) * gc1), else all blocks in one.
    groups, gcq = (nq * cq, cq) if need_grad_q else (1, 1)
    gn1, gc1 = int(need_grad_q and nq > 1), int(need_grad_q and cq > 1)
    cpg = 1 if gc1 else c
    m = (1 if gn1 else n) * cpg * hb * wb  # blocks per group
    programs = triton.cdiv(m, program_blocks(variant))
    partials = torch.zeros((groups, programs, 64) if need_grad_q else (1,), dtype=torch.float32, device=x.device)
    kernel = BACKWARD[variant] if wrap is None else wrap(BACKWARD[variant])

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCKS"] * meta["TILES"]), groups)

    gx_arg = gx if need_grad_x else x  # never written: a placeholder with x's strides
    kernel[grid](
        gy, x, q, gx_arg, partials,
        m, cpg, h, w, hb, wb, *_table_strides(q), gcq, gn1, gc1,
        *gy.stride(),
        *x.stride(),
        *gx_arg.stride(),
        scale, programs * 64,
        SURROGATE=s, NEED_GX=bool(need_grad_x), NEED_GQ=bool(need_grad_q),
        SEP=variant == "separable", PRECISION=precision, USE_LIBDEVICE=_use_libdevice(x),
    )  # fmt: skip
    gq = (partials.sum(dim=1) * (1.0 / scale)).view(nq, cq, 8, 8) if need_grad_q else q.new_empty(0)
    return gx, gq


# --------------------------------------------------------------------------- ops


def _qnt_triton(x: torch.Tensor, q: torch.Tensor, scale: float, surrogate: str, soft_forward: bool) -> torch.Tensor:
    """The QNT forward (Triton); ``q`` the canonical float32 (Nq, Cq, 8, 8) table."""
    return launch_qnt(x, q, scale, surrogate, soft_forward, wrap=wrap_triton)


def _qnt_backward_triton(
    grad_y: torch.Tensor, x: torch.Tensor, q: torch.Tensor, scale: float, surrogate: str, soft_forward: bool,
    need_grad_x: bool, need_grad_q: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The fused QNT backward (Triton): (grad_x, grad_q), an output not wanted empty."""
    return launch_backward(grad_y, x, q, scale, surrogate, soft_forward, need_grad_x, need_grad_q, wrap=wrap_triton)


if not INTERPRET:
    qnt_triton = triton_op("gcln_fast::qnt_triton", mutates_args=())(_qnt_triton)
    qnt_backward_triton = triton_op("gcln_fast::qnt_backward_triton", mutates_args=())(_qnt_backward_triton)
else:
    # torch cannot trace interpreted kernels (wrap_triton hands them back unwrapped, and they
    # would run on fake tensors), so under TRITON_INTERPRET=1 (the tests on CPU tensors) the
    # ops are opaque custom ops with fake kernels: opcheck and torch.compile then still work.
    qnt_triton = torch.library.custom_op("gcln_fast::qnt_triton", mutates_args=())(_qnt_triton)
    qnt_backward_triton = torch.library.custom_op("gcln_fast::qnt_backward_triton", mutates_args=())(
        _qnt_backward_triton
    )

    @qnt_triton.register_fake
    def _(x, q, scale, surrogate, soft_forward):
        return torch.empty_like(x)

    @qnt_backward_triton.register_fake
    def _(grad_y, x, q, scale, surrogate, soft_forward, need_grad_x, need_grad_q):
        gx = torch.empty_like(x) if need_grad_x else x.new_empty(0)
        return gx, (torch.empty_like(q) if need_grad_q else q.new_empty(0))


__all__ = [
    "DEFAULT_DOT_PRECISION",
    "DEFAULT_VARIANT",
    "DOT_PRECISIONS",
    "VARIANTS",
    "launch_backward",
    "launch_qnt",
    "qnt_backward_triton",
    "qnt_triton",
]
