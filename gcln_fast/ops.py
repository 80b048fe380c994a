"""The QNT op: backend choice, ``torch.library`` registration and autograd (``docs/qnt-op.md``).

The compiled ops (schema in C++, ``csrc/ops.cpp``; kernels per device)::

    gcln_fast::qnt(Tensor x, Tensor q, float scale, str surrogate, bool soft_forward) -> Tensor
    gcln_fast::qnt_backward(Tensor grad_y, Tensor x, Tensor q, float scale, str surrogate,
                            bool soft_forward, bool need_grad_x, bool need_grad_q) -> (Tensor, Tensor)

and their Triton twins ``gcln_fast::qnt_triton`` / ``gcln_fast::qnt_backward_triton``
(``gcln_fast.kernels.qnt_triton``). Every op takes ``q`` as the canonical
float32 ``(Nq, Cq, 8, 8)`` table. This module adds the fake kernels and the one
backward function (:func:`qnt_backward`) that the registered autograd of every
op and the public :class:`QNTFunction` share.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from . import _validate
from .reference import qnt_reference_backward, qnt_reference_table

try:  # the compiled extension registers the schema and the CPU/CUDA kernels
    from . import _C  # noqa: F401

    EXTENSION_ERROR: Exception | None = None
except ImportError as exc:  # not built (or built for another torch): the reference backend still works
    _C = None
    EXTENSION_ERROR = exc

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")


def _has_kernel(op: str, key: str) -> bool:
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


# Decided once at import: backend resolution then stays plain Python that
# torch.compile can constant-fold.
_CPU_KERNEL = _has_kernel("gcln_fast::qnt", "CPU")
_CUDA_KERNEL = _has_kernel("gcln_fast::qnt", "CUDA")
# Triton runs on CUDA tensors, or on CPU tensors under its interpreter (slow: for tests).
_TRITON_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"


def _load_triton():
    """(module, None) when the Triton backend can run here, else (None, why not or None)."""
    if importlib.util.find_spec("triton") is None or not (_TRITON_INTERPRETER or torch.cuda.is_available()):
        return None, None
    try:
        from .kernels import qnt_triton
    except ImportError as exc:  # a broken Triton install must not break the package
        return None, exc
    if not hasattr(qnt_triton, "qnt_backward_triton"):
        return None, RuntimeError(
            "gcln_fast.kernels.qnt_triton predates the second-edition op contract (no qnt_backward_triton)"
        )
    return qnt_triton, None


_triton, TRITON_ERROR = _load_triton()


def _triton_runs_on(device: torch.device) -> bool:
    if _triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _TRITON_INTERPRETER)


def available_backends(device=None) -> list[str]:
    """Backend names that can run here: for ``device`` (a device or name), or on any device if None."""
    devices = [torch.device(device)] if device is not None else [torch.device("cpu")]
    if device is None and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    found = ["reference"]
    for dev in devices:
        if dev.type == "cpu" and _CPU_KERNEL:
            found.append("cpu")
        if dev.type == "cuda" and _CUDA_KERNEL:
            found.append("cuda")
        if _triton_runs_on(dev) and "triton" not in found:
            found.append("triton")
    return found


# The order "auto" tries for CUDA tensors: a default, not measured (no GPU run
# has been made; bench/bench_qnt.py --device cuda decides it).
_CUDA_PREFERENCE = ("cuda", "triton")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into a backend that runs on ``device``."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    usable = available_backends(device)
    if backend == "auto":
        if device.type == "cuda":
            return next((name for name in _CUDA_PREFERENCE if name in usable), "reference")
        return "cpu" if device.type == "cpu" and "cpu" in usable else "reference"
    if backend not in usable:
        load_error = TRITON_ERROR if backend == "triton" else EXTENSION_ERROR if backend in ("cpu", "cuda") else None
        why = f" (it failed to load: {load_error})" if load_error else ""
        raise ValueError(f"backend {backend!r} is not available for a tensor on {device}{why}; available: {usable}")
    return backend


# --------------------------------------------------------------------------- the reference as a backend


def reference_forward(x, q, scale: float, surrogate: str, soft_forward: bool) -> torch.Tensor:
    """The reference with the compiled ops' signature (canonical table, no autograd)."""
    with torch.no_grad():
        return qnt_reference_table(x, q, scale, surrogate, soft_forward)


def reference_backward(grad_y, x, q, scale, surrogate, soft_forward, need_grad_x, need_grad_q):
    """The reference's written-out backward with ``qnt_backward``'s signature (no autograd inside,
    so torch.compile traces it)."""
    grad_x, grad_q = qnt_reference_backward(grad_y, x, q, scale, surrogate, need_grad_x, need_grad_q)
    return (grad_x if need_grad_x else x.new_empty(0)), (grad_q if need_grad_q else q.new_empty(0))


def _ops(name: str):
    """(forward op, backward op) of a backend, both with the compiled ops' signatures."""
    if name == "reference":
        return reference_forward, reference_backward
    if name == "triton":
        return _triton.qnt_triton, _triton.qnt_backward_triton
    return torch.ops.gcln_fast.qnt.default, torch.ops.gcln_fast.qnt_backward.default


# --------------------------------------------------------------------------- autograd


def qnt_backward(ctx, grad_y):
    """The backward shared by every registered op and :class:`QNTFunction`: (grad_x, grad_q).

    With the identity surrogate ``grad_x`` is ``grad_y`` itself (the orthonormal
    DCT and the crop make the straight-through Jacobian the identity): no copy,
    no kernel. Otherwise, and for ``grad_q``, one fused pass of the backend's
    ``qnt_backward`` op over the saved input.
    """
    need_x, need_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    identity = ctx.surrogate == "identity"
    kernel_x = need_x and not identity
    grad_x = grad_y if need_x and identity else None
    grad_q = None
    if kernel_x or need_q:
        x, q = ctx.saved_tensors
        gx, gq = ctx.backward_op(grad_y, x, q, ctx.scale, ctx.surrogate, ctx.soft_forward, kernel_x, need_q)
        grad_x = gx if kernel_x else grad_x
        grad_q = gq if need_q else None
    return grad_x, grad_q


def _setup_backward(ctx, x, q, scale, surrogate, soft_forward, backward_op) -> None:
    ctx.scale, ctx.surrogate, ctx.soft_forward, ctx.backward_op = scale, surrogate, soft_forward, backward_op
    if (ctx.needs_input_grad[0] and surrogate != "identity") or ctx.needs_input_grad[1]:
        ctx.save_for_backward(x, q)


def _register_autograd(op_name: str, backward_op) -> None:
    def setup_context(ctx, inputs, output):
        _setup_backward(ctx, *inputs, backward_op)

    def backward(ctx, grad_y):
        return *qnt_backward(ctx, grad_y), None, None, None

    torch.library.register_autograd(op_name, backward, setup_context=setup_context)


def _check_fake_shapes(x, q) -> None:
    torch._check(x.dim() == 4, lambda: f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    torch._check(
        q.dim() == 4 and q.shape[2] == 8 and q.shape[3] == 8, lambda: f"q must be (Nq, Cq, 8, 8), got {tuple(q.shape)}"
    )
    torch._check(q.shape[0] == 1 or q.shape[0] == x.shape[0], lambda: f"q's Nq must be 1 or N={x.shape[0]}")
    torch._check(q.shape[1] == 1 or q.shape[1] == x.shape[1], lambda: f"q's Cq must be 1 or C={x.shape[1]}")


def _fake_forward(x, q, scale, surrogate, soft_forward):
    _check_fake_shapes(x, q)
    return torch.empty_like(x)


def _fake_backward(grad_y, x, q, scale, surrogate, soft_forward, need_grad_x, need_grad_q):
    _check_fake_shapes(x, q)
    torch._check(grad_y.shape == x.shape, lambda: f"grad_y must have x's shape {tuple(x.shape)}")
    grad_x = torch.empty_like(x) if need_grad_x else x.new_empty(0)
    grad_q = torch.empty_like(q, dtype=torch.float32) if need_grad_q else q.new_empty(0, dtype=torch.float32)
    return grad_x, grad_q


if _C is not None:
    torch.library.register_fake("gcln_fast::qnt", _fake_forward)
    torch.library.register_fake("gcln_fast::qnt_backward", _fake_backward)
    _register_autograd("gcln_fast::qnt", torch.ops.gcln_fast.qnt_backward.default)
if _triton is not None:  # triton_op derives its own fake kernels
    _register_autograd("gcln_fast::qnt_triton", _triton.qnt_backward_triton)


class QNTFunction(torch.autograd.Function):
    """``QNTFunction.apply(x, q_table, scale, backend, surrogate, soft_forward)``: the op as an autograd Function.

    ``q_table`` is the canonical float32 (Nq, Cq, 8, 8) table (see :func:`gcln_fast.qnt`
    for the friendly entry point); the backward is :func:`qnt_backward`, the same
    function the registered ops use, with the backend's ``qnt_backward`` op.
    """

    @staticmethod
    def forward(ctx, x, q_table, scale, backend="auto", surrogate="identity", soft_forward=False):
        _validate.check_x(x)
        _validate.check_table(q_table, x)
        scale = _validate.check_scale(scale)
        surrogate = _validate.check_surrogate(surrogate)
        soft_forward = _validate.check_soft_forward(soft_forward)
        forward_op, backward_op = _ops(resolve_backend(backend, x.device))
        _setup_backward(ctx, x, q_table, scale, surrogate, soft_forward, backward_op)
        return forward_op(x, q_table, scale, surrogate, soft_forward)

    @staticmethod
    def backward(ctx, grad_y):
        return *qnt_backward(ctx, grad_y), None, None, None, None


# --------------------------------------------------------------------------- public entry


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times ``factor`` (the LSQ gradient-scale trick, value exact)."""

    @staticmethod
    def forward(ctx, t, factor):
        ctx.save_for_backward(factor)
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def lsq_grad_factor(x: torch.Tensor, table: torch.Tensor, scale: float) -> torch.Tensor:
    """Esser et al.'s step-size gradient scale ``1 / sqrt(B * Q_p)`` per table entry.

    ``B`` is the number of 8x8 blocks whose coefficient feeds the entry and
    ``Q_p = 8 * scale / q`` the largest quantization level a [0, 1] image reaches
    (the DC coefficient of a white block), so ``grad_q`` does not grow with the
    batch, the image size or the resolution of the table.
    """
    n, c, h, w = x.shape
    blocks = (n // table.shape[0]) * (c // table.shape[1]) * math.ceil(h / 8) * math.ceil(w / 8)
    return (table.detach() / (8.0 * scale * max(blocks, 1))).sqrt()


def qnt_table(
    x: torch.Tensor,
    table: torch.Tensor,
    scale: float,
    backend: str = "auto",
    surrogate: str = "identity",
    soft_forward: bool = False,
    lsq_grad_scale_on: bool = False,
) -> torch.Tensor:
    """The op on already validated arguments and a canonical table (what :class:`QuantizedDCT` calls)."""
    if lsq_grad_scale_on and table.requires_grad:
        table = _ScaleGrad.apply(table, lsq_grad_factor(x, table, scale))
    name = resolve_backend(backend, x.device)
    if name == "reference":  # the reference's forward with the shared backward (exact straight-through)
        return QNTFunction.apply(x, table, scale, name, surrogate, soft_forward)
    return _ops(name)[0](x, table, scale, surrogate, soft_forward)


def qnt(
    x: torch.Tensor,
    q=10.0,
    *,
    scale: float = 255.0,
    backend: str = "auto",
    surrogate: str = "identity",
    soft_forward: bool = False,
    lsq_grad_scale: bool = False,
) -> torch.Tensor:
    """Quantized 8x8 block DCT: ``y = IDCT(q * R(DCT(x * scale) / q)) / scale`` (``docs/qnt-op.md``).

    Args:
        x: (N, C, H, W) float32/float16/bfloat16 tensor, any H and W, any
            memory layout (contiguous, channels-last or strided).
        q: positive quantization step in units of ``x * scale`` (for [0, 1]
            images and ``scale=255``, 8-bit pixel units): a number or 0-d
            tensor, an (8, 8) per-frequency table, a (C, 8, 8) per-channel
            table or a per-sample (N, 1, 8, 8) / (N, C, 8, 8) table. A ``q``
            that requires grad receives the step-size gradient.
        scale: positive multiplier applied before the transform.
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"triton"``;
            see :func:`available_backends`.
        surrogate: the rounding surrogate whose slope the backward uses:
            ``"identity"`` (straight-through, BPDA), ``"cubic"`` or ``"sine"``.
        soft_forward: use the surrogate in the forward pass too.
        lsq_grad_scale: scale ``grad_q`` by :func:`lsq_grad_factor` (off by default).

    Returns:
        (N, C, H, W) tensor of ``x``'s dtype, device and memory format.
    """
    _validate.check_x(x)
    scale = _validate.check_scale(scale)
    surrogate = _validate.check_surrogate(surrogate)
    soft_forward = _validate.check_soft_forward(soft_forward)
    table = _validate.canonical_q(q, x, scale)
    return qnt_table(x, table, scale, backend, surrogate, soft_forward, lsq_grad_scale)
