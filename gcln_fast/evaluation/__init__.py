"""Robustness evaluation of defended classifiers: oblivious, adaptive (BPDA) and transfer attacks, the
per-image worst case (the headline), gradient-masking sanity checks, and JSON/Markdown reports."""

from .core import (
    DEFAULT_ADAPTIVE,
    DEFAULT_OBLIVIOUS,
    DEFAULT_TRANSFER,
    KIND,
    LABELS,
    correct,
    craft_all,
    eps_sweep,
    evaluate,
    gradient_stats,
    iteration_sweep,
    strip_timing,
)
from .report import format_markdown, sanity_lines, write_report
from .sanity import (
    check_adaptive_vs_oblivious,
    check_adaptive_vs_transfer,
    check_eps_sweep,
    check_gradients,
    check_iteration_sweep,
    check_iterative_vs_single_step,
)

__all__ = [
    "DEFAULT_ADAPTIVE",
    "DEFAULT_OBLIVIOUS",
    "DEFAULT_TRANSFER",
    "LABELS",
    "KIND",
    "check_adaptive_vs_oblivious",
    "check_adaptive_vs_transfer",
    "check_eps_sweep",
    "check_gradients",
    "check_iteration_sweep",
    "check_iterative_vs_single_step",
    "correct",
    "craft_all",
    "eps_sweep",
    "evaluate",
    "format_markdown",
    "gradient_stats",
    "iteration_sweep",
    "sanity_lines",
    "strip_timing",
    "write_report",
]
