"""Autotune tables of the Triton QNT kernels: the launch configurations each form tries.

None of these has been measured on a GPU (``bench/bench_triton_variants.py`` does that);
they are defaults. Under ``TRITON_INTERPRET=1`` (CPU tensors, tests) every kernel has one
configuration: the interpreter's cost is per operation, not per element, so few wide tiles.
``GCLN_FAST_TRITON_CONFIGS=first`` keeps only the first configuration of each form (the GPU
check's tests set it: they check results, and every configuration is another compile).
"""

from __future__ import annotations

import os

import triton

from .butterfly import qnt_bwd_butterfly_kernel, qnt_fwd_butterfly_kernel
from .forms import qnt_bwd_kernel, qnt_fwd_kernel

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FIRST_CONFIG_ONLY = os.environ.get("GCLN_FAST_TRITON_CONFIGS", "all") == "first"
VARIANTS = ("dot", "separable", "butterfly")


# Blocks per program, the same for every configuration of a form (BLOCKS * TILES): the
# backward's partial sums then have one row per program whatever configuration the
# autotuner picks, so no row of a configuration it only benchmarked is left in them.
PROGRAM_BLOCKS = {"dot": 128, "separable": 64, "butterfly": 256}
# (BLOCKS blocks per tile, num_warps) to try; TILES = PROGRAM_BLOCKS / BLOCKS.
_TRIED = {
    "dot": [(64, 4), (128, 8)],
    "separable": [(16, 4), (32, 8), (64, 8)],
    "butterfly": [(128, 4), (256, 8)],  # one block per thread, or two
}
_INTERPRETED = {"dot": (32, 4), "separable": (16, 4), "butterfly": (256, 2)}


def configs(variant: str) -> list:
    """The autotuner's configurations of a form."""
    if INTERPRET:
        blocks, warps = _INTERPRETED[variant]
        return [triton.Config({"BLOCKS": blocks, "TILES": 1}, num_warps=warps)]
    per_program = PROGRAM_BLOCKS[variant]
    tried = _TRIED[variant][:1] if FIRST_CONFIG_ONLY else _TRIED[variant]
    return [triton.Config({"BLOCKS": b, "TILES": per_program // b}, num_warps=w) for b, w in tried]


def program_blocks(variant: str) -> int:
    """Blocks per program (every configuration of the form has the same)."""
    return configs(variant)[0].kwargs["BLOCKS"] * configs(variant)[0].kwargs["TILES"]


def _autotuned(kernel, variant: str):
    # M (blocks per group) decides the tiling; the other keys select distinct compiled kernels anyway.
    return triton.autotune(configs=configs(variant), key=["M", "H", "W"])(kernel)


FORWARD = {
    "dot": _autotuned(qnt_fwd_kernel, "dot"),
    "separable": _autotuned(qnt_fwd_kernel, "separable"),
    "butterfly": _autotuned(qnt_fwd_butterfly_kernel, "butterfly"),
}
BACKWARD = {
    "dot": _autotuned(qnt_bwd_kernel, "dot"),
    "separable": _autotuned(qnt_bwd_kernel, "separable"),
    "butterfly": _autotuned(qnt_bwd_butterfly_kernel, "butterfly"),
}
