"""Robustness evaluation of defended classifiers: oblivious, adaptive and transfer attacks, the
per-image worst case (the headline, beside chance), accuracy vs eps, gradient-masking and
broken-defence sanity checks, and JSON/Markdown/PNG reports."""

from .core import (
    DEFAULT_ADAPTIVE,
    DEFAULT_EPS_CURVE,
    DEFAULT_OBLIVIOUS,
    DEFAULT_TRANSFER,
    KIND,
    correct,
    craft_all,
    eps_sweep,
    evaluate,
    gradient_stats,
    iteration_sweep,
    make_plan,
    strip_timing,
)
from .plots import plot_eps_curve
from .report import attack_budget, format_markdown, sanity_lines, write_report
from .rows import Row
from .runner import LABELS
from .sanity import (
    check_above_chance,
    check_adaptive_vs_oblivious,
    check_adaptive_vs_transfer,
    check_clean_vs_classifier,
    check_eps_response,
    check_eps_sweep,
    check_gradients,
    check_iteration_sweep,
    check_iterative_vs_single_step,
    check_square_vs_gradient,
    check_targeted_vs_untargeted,
)
from .suites import BUDGETS, SUITES, Suite, get_suite

__all__ = [
    "BUDGETS",
    "DEFAULT_ADAPTIVE",
    "DEFAULT_EPS_CURVE",
    "DEFAULT_OBLIVIOUS",
    "DEFAULT_TRANSFER",
    "KIND",
    "LABELS",
    "Row",
    "SUITES",
    "Suite",
    "attack_budget",
    "check_above_chance",
    "check_adaptive_vs_oblivious",
    "check_adaptive_vs_transfer",
    "check_clean_vs_classifier",
    "check_eps_response",
    "check_eps_sweep",
    "check_gradients",
    "check_iteration_sweep",
    "check_iterative_vs_single_step",
    "check_square_vs_gradient",
    "check_targeted_vs_untargeted",
    "correct",
    "craft_all",
    "eps_sweep",
    "evaluate",
    "format_markdown",
    "get_suite",
    "gradient_stats",
    "iteration_sweep",
    "make_plan",
    "plot_eps_curve",
    "sanity_lines",
    "strip_timing",
    "write_report",
]
