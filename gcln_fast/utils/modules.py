"""Helpers on ``nn.Module`` parameters."""

from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def frozen(*modules):
    """Turn off ``requires_grad`` on every parameter of ``modules`` and restore each flag on exit,
    also when the body raises. Non-modules (plain callables) are ignored."""
    params = [p for m in modules if isinstance(m, nn.Module) for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
