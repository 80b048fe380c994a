"""Helpers on ``nn.Module`` parameters."""

from __future__ import annotations

import contextlib

import torch
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


def preferred_memory_format(device) -> torch.memory_format:
    """The memory format training puts images and conv weights in: channels-last on every device.

    On CUDA it feeds the tensor cores under bf16 autocast; on the CPU oneDNN's convolutions run
    faster in NHWC: a PGD-AT step and a GCLN pair step 1.39x faster at batch 64, 2 threads
    (``python bench/bench_memory_format.py --threads 2``; README, "Benchmarks"). Results equal
    NCHW's up to the order of float rounding."""
    del device  # one answer today; the argument keeps call sites ready for a device that differs
    return torch.channels_last


@contextlib.contextmanager
def in_memory_format(module: nn.Module, memory_format: torch.memory_format):
    """``module``'s weights in ``memory_format`` for the body (a caller's model keeps its own layout
    afterwards: channels-last comes back as channels-last, anything else as contiguous)."""
    was_cl = any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in module.parameters()
    )
    module.to(memory_format=memory_format)
    try:
        yield module
    finally:
        module.to(memory_format=torch.channels_last if was_cl else torch.contiguous_format)
