"""The IJG standard quantization tables and libjpeg's quality -> table mapping.

``quality_tables(quality)`` reproduces ``jpeg_set_quality(cinfo, Q, force_baseline=TRUE)``
of libjpeg / libjpeg-turbo (``jcparam.c``) exactly for every integer quality 1..100:

    S = 5000 // Q  if Q < 50  else  200 - 2 Q          (jpeg_quality_scaling)
    T = clip(floor((T0 * S + 50) / 100), 1, 255)      (jpeg_add_quant_table)

A real-valued quality goes through the same formula (``5000 // Q`` as ``floor(5000 / Q)``),
so the forward tables are always libjpeg's for the integer part of the scaling. When the
quality tensor requires grad, the backward treats both floors and the clip as the identity
(straight-through): ``dT/dQ = T0 / 100 * dS/dQ`` with ``dS/dQ = -5000 / Q**2`` below 50 and
``-2`` from 50 on.
"""

from __future__ import annotations

import torch

# ITU-T T.81 Annex K, tables K.1 and K.2, in natural (row-major) order, as in jcparam.c.
IJG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
IJG_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4


def base_tables(device=None) -> torch.Tensor:
    """The two IJG base tables as a float32 (2, 8, 8) tensor: [luma, chroma]."""
    return torch.tensor((IJG_LUMA, IJG_CHROMA), dtype=torch.float32, device=device)


def quality_scaling(quality: torch.Tensor) -> torch.Tensor:
    """libjpeg's ``jpeg_quality_scaling`` (percent) for a float tensor of qualities in [1, 100]."""
    low = torch.floor(5000.0 / quality)
    high = 200.0 - 2.0 * quality
    hard = torch.where(quality < 50, low, high)
    if not quality.requires_grad:
        return hard
    soft = torch.where(quality < 50, 5000.0 / quality, high)
    return soft + (hard - soft).detach()


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) tables for a float32 quality tensor of shape () or (N,).

    Returns two float32 tensors of shape (8, 8) for a 0-d quality, (N, 1, 8, 8) for an
    (N,) quality (the op's per-sample form). Differentiable in ``quality`` as described
    in the module docstring.
    """
    scaling = quality_scaling(quality)
    base = base_tables(quality.device)
    per = scaling.reshape(*scaling.shape, 1, 1, 1) if scaling.dim() else scaling
    soft = (base * per + 50.0) / 100.0
    hard = torch.clamp(torch.floor(soft), 1.0, 255.0)
    tables = soft + (hard - soft).detach() if quality.requires_grad else hard
    if quality.dim() == 0:
        return tables[0], tables[1]
    return tables[:, 0:1], tables[:, 1:2]
