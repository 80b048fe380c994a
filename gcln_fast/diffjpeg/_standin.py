"""TEMPORARY stand-in for the op's second edition (per-sample tables): delete after merging `kernel`."""

import torch

from ..ops import qnt


def quantize(t, table, *, surrogate, soft_forward, backend):
    if surrogate != "identity" or soft_forward:
        raise NotImplementedError("stand-in: identity only")
    if table.dim() == 4:
        if table.shape[1] == 1:
            table = table.expand(-1, t.shape[1], 8, 8)
        return torch.cat([qnt(t[i : i + 1], table[i], scale=1.0, backend=backend) for i in range(t.shape[0])])
    return qnt(t, table, scale=1.0, backend=backend)
