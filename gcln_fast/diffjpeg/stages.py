"""The encoder's and decoder's pixel stages as autograd Functions with hand-written adjoints.

``Encode``: RGB in [0, 1] -> level-shifted Y (N, 1, H, W) and chroma (N, 2, h, w) at the
chroma resolution, whole 8x8 blocks wide (what the QNT op quantizes). ``Decode``: quantized
Y and chroma -> RGB in [0, 1] units, clipped in place when asked (straight-through).

With ``exact=True`` every rounding is libjpeg's (8-bit YCbCr, rounded box average on the
encoder side; 8-bit decoded samples, rounded fancy upsampling and colour conversion on the
decoder side). Either way the backward is the adjoint of the rounding-free linear map
(the 8-bit roundings and the clamps of intermediate samples are straight-through), computed
directly rather than through an autograd graph of the pixel glue.

On the CPU both directions of both stages run as fused C++ kernels (``csrc/cpu/jpeg_cpu.cpp``,
one pass over the image each); elsewhere, and for float64, as the PyTorch ops below, which
define what the kernels must compute (``tests/test_jpeg.py`` compares the two).
"""

from __future__ import annotations

import torch

from .. import ops
from . import color
from .sampling import FACTORS, chroma_size, downsample, downsample_adjoint, upsample, upsample_adjoint

# The fused CPU kernels (csrc/cpu/jpeg_cpu.cpp): one pass per stage instead of one per op.
# Decided once at import, like the QNT op's backends.
_FUSED_OPS = ("encode", "decode", "encode_backward", "decode_backward")
FUSED_CPU = ops._C is not None and all(
    torch._C._dispatch_has_kernel_for_dispatch_key(f"gcln_fast::jpeg_{name}", "CPU") for name in _FUSED_OPS
)
if FUSED_CPU:

    @torch.library.register_fake("gcln_fast::jpeg_encode")
    def _(x, fv, fh, exact):
        n, _, h, w = x.shape
        return x.new_empty(n, 1, h, w), x.new_empty(n, 2, -(-h // fv), 8 * -(-w // 16) if fh == 2 else w)

    @torch.library.register_fake("gcln_fast::jpeg_decode")
    def _(y, c, fv, fh, height, width, exact, clip):
        return y.new_empty(y.shape[0], 3, height, width)

    @torch.library.register_fake("gcln_fast::jpeg_encode_backward")
    def _(grad_y, grad_c, fv, fh):
        n, _, h, w = grad_y.shape
        return grad_y.new_empty(n, 3, h, w)

    @torch.library.register_fake("gcln_fast::jpeg_decode_backward")
    def _(grad, fv, fh, c_height, c_width):
        n, _, h, w = grad.shape
        return grad.new_empty(n, 1, h, w), grad.new_empty(n, 2, c_height, c_width)


def _fused(t: torch.Tensor) -> bool:
    return FUSED_CPU and t.device.type == "cpu" and t.dtype != torch.float64


def _mix(m: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None, out=None, **scales) -> torch.Tensor:
    """Per-pixel channel mix ``m @ v`` of (N, C, L) ``v`` (+ ``bias`` (N, O, L)-broadcastable), one batched matmul."""
    m = m.expand(v.shape[0], *m.shape)
    if bias is None:
        return torch.bmm(m, v, out=out)
    return torch.baddbmm(bias.expand(v.shape[0], m.shape[1], v.shape[2]), m, v, out=out, **scales)


class Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mode: str, exact: bool):
        n, _, h, w = x.shape
        ctx.mode, ctx.x_dtype, ctx.x_shape = mode, x.dtype, x.shape
        if _fused(x):
            return torch.ops.gcln_fast.jpeg_encode(x.to(torch.float32).contiguous(), *FACTORS[mode], exact)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        levels = x.to(dtype) * 255.0  # exact integers for 8-bit images k / 255
        bias = color.vector(color.ENCODE_BIAS_EXACT if exact else color.ENCODE_BIAS_FLOAT, levels).reshape(1, 3, 1)
        ycc = _mix(color.matrix(color.RGB_TO_YCC, levels), levels.reshape(n, 3, h * w), bias)
        if exact:
            ycc.floor_()
        ycc = ycc.view(n, 3, h, w)
        chroma = ycc[:, 1:] if mode == "4:4:4" else downsample(ycc[:, 1:], mode, exact)
        return ycc[:, :1], chroma

    @staticmethod
    def backward(ctx, grad_y, grad_c):
        n, _, h, w = ctx.x_shape
        if _fused(grad_y):
            grad_x = torch.ops.gcln_fast.jpeg_encode_backward(
                grad_y.contiguous(), grad_c.contiguous(), *FACTORS[ctx.mode]
            )
            return grad_x.to(ctx.x_dtype), None, None
        g = grad_y.new_empty(n, 3, h, w)  # (autograd materialises a missing gradient as zeros)
        g[:, :1] = grad_y
        if ctx.mode == "4:4:4":
            g[:, 1:] = grad_c
        else:
            downsample_adjoint(grad_c, ctx.mode, g[:, 1:])
        m = color.matrix(color.RGB_TO_YCC, g, scale=255.0).T
        return _mix(m, g.view(n, 3, h * w)).view(n, 3, h, w).to(ctx.x_dtype), None, None


def _levels(t: torch.Tensor) -> torch.Tensor:
    """libjpeg's decoded samples: the inverse DCT rounded half up and range-limited to 8 bits (shifted)."""
    return torch.clamp(t, -128.0, 127.0).add_(0.5).floor_()


class Decode(torch.autograd.Function):
    """``clip``: clamp the result to [0, 1] in place, with the identity as its gradient."""

    @staticmethod
    def forward(ctx, y, c, mode: str, size: tuple[int, int], exact: bool, clip: bool):
        n = y.shape[0]
        ctx.mode, ctx.size, ctx.c_shape = mode, size, c.shape
        if _fused(y):
            return torch.ops.gcln_fast.jpeg_decode(y.contiguous(), c.contiguous(), *FACTORS[mode], *size, exact, clip)
        out = y.new_empty(n, 3, *size)
        flat = out.view(n, 3, size[0] * size[1])
        if exact:
            y, c = _levels(y), _levels(c)
        up = c if mode == "4:4:4" else upsample(c, mode, size, exact)
        up = up.reshape(n, 2, flat.shape[2])
        y = (y + 128.0).reshape(n, 1, flat.shape[2])
        m = color.matrix(color.YCC_TO_RGB, y)
        if exact:
            _mix(m, up, torch.full_like(y[:1, :1, :1], 0.5), out=flat).floor_()
            flat.add_(y).div_(255.0)  # k / 255, as 8-bit images are read
        else:  # (Y + M c) / 255 in one matmul
            _mix(m, up, y, out=flat, beta=1.0 / 255.0, alpha=1.0 / 255.0)
        return out.clamp_(0.0, 1.0) if clip else out

    @staticmethod
    def backward(ctx, grad):
        n, _, h, w = grad.shape
        if _fused(grad):
            grad_y, grad_c = torch.ops.gcln_fast.jpeg_decode_backward(
                grad.contiguous(), *FACTORS[ctx.mode], *ctx.c_shape[-2:]
            )
            return grad_y, grad_c, None, None, None, None
        g = grad.reshape(n, 3, h * w)
        grad_y = g.sum(1, keepdim=True).mul_(1.0 / 255.0).view(n, 1, h, w)
        m = color.matrix(color.YCC_TO_RGB, g, scale=1.0 / 255.0).T
        grad_up = _mix(m, g).view(n, 2, h, w)
        if ctx.mode == "4:4:4":
            return grad_y, grad_up, None, None, None, None
        ch, cw = chroma_size(ctx.mode, ctx.size)
        grad_c = grad_up.new_zeros(ctx.c_shape)
        grad_c[..., :ch, :cw] = upsample_adjoint(grad_up, ctx.mode, (ch, cw))
        return grad_y, grad_c, None, None, None, None
