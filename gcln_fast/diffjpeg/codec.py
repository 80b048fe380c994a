"""``gcln_fast.jpeg``: a differentiable JPEG encoder+decoder on the fused QNT op."""

from __future__ import annotations

import functools
import math
import numbers

import torch

from .._validate import canonical_q
from ..ops import qnt_table
from ..qnt_constants import SURROGATES
from ..reference import qnt_reference
from .clip import clip_output, straight_through
from .sampling import SUBSAMPLING
from .stages import Decode, Encode
from .tables import quality_tables

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_x(x, backend) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (N, 3, H, W) (RGB) or (N, 1, H, W) (grayscale), got {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have H >= 1 and W >= 1, got {tuple(x.shape)}")
    if x.dtype == torch.float64 and backend != "reference":
        raise TypeError("x may be float64 only with backend='reference' (the float64 ground truth)")
    if x.dtype not in _FLOAT_DTYPES + (torch.float64,):
        raise TypeError(f"x must be float32, float16 or bfloat16 (float64 with backend='reference'), got {x.dtype}")


def _math_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_quality(quality, x: torch.Tensor):
    """``quality`` checked to lie in [1, 100]: a float, or a float32 tensor of shape () or (N,) on x's device."""
    if isinstance(quality, bool) or not isinstance(quality, (numbers.Real, torch.Tensor)):
        raise TypeError(f"quality must be a number or a tensor, got {type(quality).__name__}")
    if not isinstance(quality, torch.Tensor):
        if not (math.isfinite(quality) and 1 <= quality <= 100):
            raise ValueError(f"quality must be in [1, 100], got {quality}")
        return float(quality)
    if quality.is_complex() or quality.dtype == torch.bool:
        raise TypeError(f"quality must be a real tensor, got {quality.dtype}")
    if quality.dim() > 1 or (quality.dim() == 1 and quality.shape[0] != x.shape[0]):
        raise ValueError(
            f"quality must be a number, a 0-d tensor or an (N={x.shape[0]},) tensor, got shape {tuple(quality.shape)}"
        )
    if quality.device != x.device:
        raise ValueError(f"quality is on {quality.device} but x is on {x.device}")
    quality = quality.to(torch.float32)
    if not torch.compiler.is_compiling():
        with torch.no_grad():
            if not bool(((quality >= 1) & (quality <= 100)).all()):  # also catches NaN
                raise ValueError(
                    f"quality must be in [1, 100] everywhere, got min {quality.min().item()} max {quality.max().item()}"
                )
    return quality


def _explicit_table(name: str, table, x: torch.Tensor) -> torch.Tensor:
    """An explicit (8, 8) or (N, 8, 8) table as the op's canonical (1 or N, 1, 8, 8) float32 table, checked."""
    n = x.shape[0]
    if not isinstance(table, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (8, 8) or (N, 8, 8), got {type(table).__name__}")
    if table.shape not in ((8, 8), (n, 8, 8)):
        raise ValueError(f"{name} must have shape (8, 8) or (N={n}, 8, 8), got {tuple(table.shape)}")
    try:  # the op's own checks (bounds, dtype, device; also under torch.compile), under this name
        return canonical_q(table.reshape(-1, 1, 8, 8), x, 1.0)
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("move q to", f"move {name} to")
        raise type(exc)(name + message[1:] if message.startswith("q ") else f"{name}: {message}") from None


@functools.lru_cache(maxsize=64)
def _number_tables(quality: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # A dozen tiny ops cost about as much as the whole codec on a 32x32 batch: build them once.
    return quality_tables(torch.tensor(quality, dtype=torch.float32, device=device))


def _tables(quality, luma_table, chroma_table, x: torch.Tensor):
    """(luma, chroma) as the op's canonical (1 or N, 1, 8, 8) tables; explicit tables override the quality's."""
    quality = _check_quality(quality, x)
    luma = chroma = None
    if luma_table is None or (chroma_table is None and x.shape[1] == 3):
        if isinstance(quality, float) and not torch.compiler.is_compiling():
            luma, chroma = _number_tables(quality, x.device)
        else:
            q = quality if isinstance(quality, torch.Tensor) else torch.tensor(quality, device=x.device)
            luma, chroma = quality_tables(q)
        luma, chroma = luma.reshape(-1, 1, 8, 8), chroma.reshape(-1, 1, 8, 8)
    if luma_table is not None:
        luma = _explicit_table("luma_table", luma_table, x)
    if chroma_table is not None:
        chroma = _explicit_table("chroma_table", chroma_table, x)
    return luma, chroma


def _quantize(t: torch.Tensor, table: torch.Tensor, surrogate: str, soft_forward: bool, backend: str):
    """The QNT op on level-shifted samples (in 8-bit units: scale 1) with a checked canonical table."""
    if t.dtype == torch.float64:  # the float64 ground truth, backend="reference" (checked by the caller)
        return qnt_reference(t, table, 1.0, surrogate=surrogate, soft_forward=soft_forward)
    # qnt_table is gcln_fast.qnt past its argument checks, which these tables have passed
    return qnt_table(t, table, 1.0, backend, surrogate, soft_forward)


def _gray(x, luma, surrogate, soft_forward, round_output, backend):
    """Grayscale JPEG: the luma plane alone (8-bit gray samples are libjpeg's Y as they are)."""
    y = _quantize(x.to(_math_dtype(x)) * 255.0 - 128.0, luma, surrogate, soft_forward, backend)
    if round_output:
        y = straight_through(y, torch.clamp(y.detach(), -128.0, 127.0).add_(0.5).floor_())
    return clip_output((y + 128.0) / 255.0, surrogate, soft_forward)


def _color(x, luma, chroma, subsampling, surrogate, soft_forward, round_output, backend):
    exact_encode = surrogate == "identity" or not soft_forward
    y, c = Encode.apply(x, subsampling, exact_encode)
    y = _quantize(y, luma, surrogate, soft_forward, backend)
    c = _quantize(c, chroma, surrogate, soft_forward, backend)
    clip_here = surrogate == "identity"  # straight-through clamp, in place inside Decode
    v = Decode.apply(y, c, subsampling, tuple(x.shape[-2:]), round_output, clip_here)
    return v if clip_here else clip_output(v, surrogate, soft_forward)


def jpeg(
    x: torch.Tensor,
    quality=75,
    *,
    subsampling: str = "4:2:0",
    surrogate: str = "identity",
    soft_forward: bool = False,
    luma_table=None,
    chroma_table=None,
    round_output: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Differentiable JPEG compression and decompression of an image batch.

    See ``docs/jpeg.md`` for what each step computes and how it compares with libjpeg.

    Args:
        x: (N, 3, H, W) RGB or (N, 1, H, W) grayscale images in [0, 1], any H and W,
            float32/float16/bfloat16 (computed in float32), or float64 with
            ``backend="reference"`` (computed in float64: the ground truth of the tests).
        quality: IJG quality in [1, 100]: a number, a 0-d tensor or an (N,) tensor (one
            quality per image); mapped to the standard tables exactly as libjpeg does, and
            differentiable when it is a tensor that requires grad (straight-through over
            the table's floor and clip, see :mod:`gcln_fast.diffjpeg.tables`).
        subsampling: chroma subsampling, ``"4:2:0"`` (libjpeg's default), ``"4:2:2"`` or ``"4:4:4"``.
        surrogate: rounding surrogate of the quantizer, ``"identity"`` (straight-through,
            BPDA), ``"cubic"`` or ``"sine"`` (see :func:`gcln_fast.qnt`); the output clip
            is straight-through for ``"identity"`` and a soft clip otherwise.
        soft_forward: use the surrogates in the forward as well: a smooth function of x
            (the 8-bit roundings of the pixel values are then skipped). No effect for
            ``"identity"``.
        luma_table, chroma_table: explicit (8, 8) or (N, 8, 8) quantization tables in
            8-bit levels, overriding ``quality`` (each may be a trainable parameter).
        round_output: decode as libjpeg does, in 8-bit integers (rounded samples, integer
            upsampling and colour conversion): the output is a multiple of 1/255.
        backend: backend of the QNT op (:func:`gcln_fast.available_backends`).

    Returns:
        The decoded images, shape and dtype of ``x``, clipped to [0, 1].
    """
    _check_x(x, backend)
    _check_choice("subsampling", subsampling, SUBSAMPLING)
    _check_choice("surrogate", surrogate, SURROGATES)
    _check_flag("soft_forward", soft_forward)
    _check_flag("round_output", round_output)
    if soft_forward and round_output and surrogate != "identity":
        raise ValueError(
            "round_output=True rounds the output to 8-bit levels: it cannot be combined with soft_forward=True"
        )
    luma, chroma = _tables(quality, luma_table, chroma_table, x)
    if x.shape[1] == 1:
        out = _gray(x, luma, surrogate, soft_forward, round_output, backend)
    else:
        out = _color(x, luma, chroma, subsampling, surrogate, soft_forward, round_output, backend)
    return out.to(x.dtype)
