"""``DiffJPEG``: :func:`gcln_fast.jpeg` as an ``nn.Module`` (a layer, or an input-transformation defence)."""

from __future__ import annotations

import torch
from torch import nn

from ..layer import _FloorQ
from ..ops import BACKENDS
from .codec import SURROGATES, _check_choice, _check_flag, _check_quality, jpeg
from .sampling import SUBSAMPLING
from .tables import quality_tables


class DiffJPEG(nn.Module):
    """Differentiable JPEG compression+decompression of (N, 3|1, H, W) images in [0, 1].

    ``DiffJPEG(quality=75)`` is the JPEG input-transformation defence of Guo et al. (2018):
    images in [0, 1] in, decoded images in [0, 1] out. ``surrogate`` is a settable,
    validated attribute, so an adaptive attack can switch the backward (BPDA's
    ``"identity"``, or ``"cubic"``/``"sine"``) on a built model.

    Args:
        quality: IJG quality in [1, 100] (a number or an (N,) tensor of per-image
            qualities); ``forward(x, quality=...)`` overrides it per call.
        subsampling, surrogate, soft_forward, round_output, backend: as in :func:`gcln_fast.jpeg`.
        luma_table, chroma_table: explicit (8, 8) tables overriding ``quality``.
        trainable: hold both tables as (8, 8) parameters (initialised from the explicit
            tables or from ``quality``) that receive the op's step-size gradient; the forward
            uses ``max(table, q_min)``, and an entry below the floor only gets gradients that
            raise it (as :class:`gcln_fast.QuantizedDCT` does).
        q_min: the smallest step a trainable table may use (default 1, JPEG's smallest).
    """

    def __init__(
        self,
        quality=75,
        *,
        subsampling="4:2:0",
        surrogate="identity",
        soft_forward=False,
        round_output=False,
        luma_table=None,
        chroma_table=None,
        trainable=False,
        q_min=1.0,
        backend="auto",
    ):
        super().__init__()
        _check_choice("subsampling", subsampling, SUBSAMPLING)
        _check_flag("soft_forward", soft_forward)
        _check_flag("round_output", round_output)
        _check_flag("trainable", trainable)
        _check_choice("backend", backend, BACKENDS)
        if isinstance(quality, torch.Tensor):  # a buffer, so that .to(device) moves it
            self.register_buffer("quality", quality.detach().clone())
        else:
            _check_quality(quality, torch.empty(1, 1, 1, 1))
            self.quality = quality
        if not (isinstance(q_min, (int, float)) and not isinstance(q_min, bool) and q_min > 0):
            raise ValueError(f"q_min must be a positive number, got {q_min!r}")
        self.subsampling = subsampling
        self.surrogate = surrogate
        self.soft_forward = soft_forward
        self.round_output = round_output
        self.backend = backend
        self.trainable = trainable
        self.q_min = float(q_min)
        tables = [luma_table, chroma_table]
        if trainable and any(t is None for t in tables):
            if isinstance(quality, torch.Tensor) and quality.dim() > 0:
                raise ValueError(
                    "trainable tables start from one quality: give a number or 0-d tensor, or explicit tables"
                )
            defaults = quality_tables(torch.as_tensor(quality, dtype=torch.float32).detach())
            tables = [t if t is not None else d for t, d in zip(tables, defaults, strict=True)]
        for name, table in zip(("luma_table", "chroma_table"), tables, strict=True):
            if table is not None:
                table = torch.as_tensor(table, dtype=torch.float32).detach().clone()
                if table.shape != (8, 8):
                    raise ValueError(f"{name} must have shape (8, 8), got {tuple(table.shape)}")
            if trainable:
                setattr(self, name, nn.Parameter(table))
            else:
                self.register_buffer(name, table)

    @property
    def surrogate(self) -> str:
        return self._surrogate

    @surrogate.setter
    def surrogate(self, value: str) -> None:
        _check_choice("surrogate", value, SURROGATES)
        self._surrogate = value

    def _table(self, table):
        if table is None or not self.trainable:
            return table
        return _FloorQ.apply(table, self.q_min)  # as QuantizedDCT keeps a trainable q >= q_min

    def forward(self, x: torch.Tensor, quality=None) -> torch.Tensor:
        return jpeg(
            x,
            self.quality if quality is None else quality,
            subsampling=self.subsampling,
            surrogate=self.surrogate,
            soft_forward=self.soft_forward,
            luma_table=self._table(self.luma_table),
            chroma_table=self._table(self.chroma_table),
            round_output=self.round_output,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        tables = ", explicit tables" if self.luma_table is not None or self.chroma_table is not None else ""
        return (
            f"quality={self.quality}, subsampling={self.subsampling!r}, surrogate={self.surrogate!r}, "
            f"soft_forward={self.soft_forward}, round_output={self.round_output}{tables}, trainable={self.trainable}"
        )
