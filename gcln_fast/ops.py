"""The QNT op: backend choice, ``torch.library`` registration and autograd.

``gcln_fast::qnt(Tensor x, Tensor q, float scale) -> Tensor`` and
``gcln_fast::qnt_grad_q(Tensor grad_y, Tensor x, Tensor q, float scale) -> Tensor``
are defined in C++ (``csrc/ops.cpp``) with one kernel per device; the Triton
kernels are the ops ``gcln_fast::qnt_triton`` / ``gcln_fast::qnt_grad_q_triton``
(``kernels/qnt_triton.py``). Every op takes ``q`` in canonical form: a float32
(Cq, 8, 8) table with Cq = 1 or C. This module adds the fake (meta) kernels and
one straight-through backward that the registered autograd of every op and the
public :class:`QNTFunction` share.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from . import _validate
from .reference import qnt_reference

try:  # the compiled extension registers the schema and the CPU/CUDA kernels
    from . import _C  # noqa: F401

    EXTENSION_ERROR: Exception | None = None
except ImportError as exc:  # the package still works with the reference backend
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
_triton = None
TRITON_ERROR: Exception | None = None
if importlib.util.find_spec("triton") is not None and (_TRITON_INTERPRETER or torch.cuda.is_available()):
    try:
        from .kernels import qnt_triton as _triton
    except ImportError as exc:  # a broken Triton install must not break the package
        TRITON_ERROR = exc


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


# Measured by bench/bench_qnt.py on an H200 (see README "Backends"): the faster
# CUDA-tensor backend comes first.
_CUDA_PREFERENCE = ("cuda", "triton")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into a backend that runs on ``device``."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    usable = available_backends(device)
    if backend == "auto":
        if device.type == "cuda":
            for name in _CUDA_PREFERENCE:
                if name in usable:
                    return name
        elif "cpu" in usable and device.type == "cpu":
            return "cpu"
        return "reference"
    if backend not in usable:
        load_error = TRITON_ERROR if backend == "triton" else EXTENSION_ERROR if backend in ("cpu", "cuda") else None
        why = f" (it failed to load: {load_error})" if load_error else ""
        raise ValueError(
            f"backend {backend!r} is not available for a tensor on {device}{why}; available: {usable}"
        )
    return backend


def _ops(name: str):
    """(forward op, grad_q op) of a compiled backend."""
    if name == "triton":
        return _triton.qnt_triton, _triton.qnt_grad_q_triton
    return torch.ops.gcln_fast.qnt.default, torch.ops.gcln_fast.qnt_grad_q.default


# --------------------------------------------------------------------------- autograd


def qnt_backward(ctx, grad_y):
    """Straight-through backward shared by every registered op and :class:`QNTFunction`.

    ``grad_x`` is ``grad_y`` itself (the orthonormal DCT and the crop make the
    straight-through Jacobian the identity): no copy, no kernel. ``grad_q`` is
    computed by the backend's fused kernel only when ``q`` needs it.
    """
    grad_q = None
    if ctx.needs_input_grad[1]:
        x, q = ctx.saved_tensors
        grad_q = ctx.grad_q_op(grad_y, x, q, ctx.scale)
    return (grad_y if ctx.needs_input_grad[0] else None), grad_q


def _save_for_backward(ctx, x, q, scale, grad_q_op):
    ctx.scale = scale
    ctx.grad_q_op = grad_q_op
    if ctx.needs_input_grad[1]:
        ctx.save_for_backward(x, q)


def _register_autograd(op_name: str, grad_q_op) -> None:
    def setup_context(ctx, inputs, output):
        x, q, scale = inputs
        _save_for_backward(ctx, x, q, scale, grad_q_op)

    def backward(ctx, grad_y):
        return *qnt_backward(ctx, grad_y), None

    torch.library.register_autograd(op_name, backward, setup_context=setup_context)


if _C is not None:

    @torch.library.register_fake("gcln_fast::qnt")
    def _(x, q, scale):
        return torch.empty_like(x)

    @torch.library.register_fake("gcln_fast::qnt_grad_q")
    def _(grad_y, x, q, scale):
        return torch.empty_like(q, dtype=torch.float32)

    _register_autograd("gcln_fast::qnt", torch.ops.gcln_fast.qnt_grad_q.default)
if _triton is not None:  # triton_op derives its own fake kernels
    _register_autograd("gcln_fast::qnt_triton", _triton.qnt_grad_q_triton)


class QNTFunction(torch.autograd.Function):
    """``QNTFunction.apply(x, q_table, scale, backend)``: the op as an autograd Function.

    ``q_table`` is the canonical float32 (Cq, 8, 8) table (see :func:`gcln_fast.qnt`
    for the friendly entry point); the backward is :func:`qnt_backward`, the same
    function the registered ops use.
    """

    @staticmethod
    def forward(ctx, x, q_table, scale, backend="auto"):
        name = resolve_backend(backend, x.device)
        if name == "reference":
            raise ValueError("QNTFunction runs the compiled backends; use gcln_fast.qnt(..., backend='reference')")
        forward_op, grad_q_op = _ops(name)
        _save_for_backward(ctx, x, q_table, scale, grad_q_op)
        return forward_op(x, q_table, scale)

    @staticmethod
    def backward(ctx, grad_y):
        return *qnt_backward(ctx, grad_y), None, None


# --------------------------------------------------------------------------- public entry


def qnt_table(x: torch.Tensor, q_table: torch.Tensor, scale: float, backend: str = "auto") -> torch.Tensor:
    """The op on an already validated canonical table (what :class:`QuantizedDCT` calls)."""
    name = resolve_backend(backend, x.device)
    if name == "reference":
        return qnt_reference(x, q_table[0] if q_table.shape[0] == 1 else q_table, scale)
    return _ops(name)[0](x, q_table, scale)


def qnt(x: torch.Tensor, q=10.0, *, scale: float = 255.0, backend: str = "auto") -> torch.Tensor:
    """Quantized 8x8 block DCT: ``y = IDCT(round(DCT(x * scale) / q) * q) / scale``.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16 tensor, any H and W, any
            memory layout (contiguous, channels-last or strided).
        q: positive quantization step in units of ``x * scale`` (for [0, 1]
            images and ``scale=255``, 8-bit pixel units): a number or 0-d
            tensor, an (8, 8) per-frequency table or a (C, 8, 8) per-channel
            table. A ``q`` that requires grad receives the LSQ step-size gradient.
        scale: positive multiplier applied before the transform.
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"triton"``;
            see :func:`available_backends`.

    Returns:
        (N, C, H, W) tensor of ``x``'s dtype, device and memory format. Its
        gradient with respect to ``x`` is the straight-through identity.
    """
    _validate.check_x(x)
    scale = _validate.check_scale(scale)
    table = _validate.canonical_q(q, x)
    return qnt_table(x, table, scale, backend)
