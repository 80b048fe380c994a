"""``evaluate``: every defence row under oblivious, adaptive and transfer attacks, the per-image worst
case, the eps curve and the gradient-masking / broken-defence sanity checks."""

from __future__ import annotations

import contextlib
import copy
import functools
import platform
import time

import torch
from torch import nn

from ..attacks import AttackSettings, canonical_attack, get_settings, is_min_norm
from ..utils.modules import in_memory_format, preferred_memory_format
from .rows import resolve_rows
from .runner import (
    LABELS,
    Context,
    Plan,
    Tolerances,
    craft_shared,
    eps_curve,
    row_checks,
    row_masks,
    sanity_sweeps,
    summarise_row,
)
from .sanity import BROKEN_CHECKS, FLAG
from .suites import PAPER_ADAPTIVE, PAPER_OBLIVIOUS, PAPER_TRANSFER, Suite, get_suite
from .sweeps import correct, craft_all, eps_sweep, gradient_stats, iteration_sweep  # noqa: F401 (public API)

KIND = "evaluation"
DEFAULT_OBLIVIOUS = PAPER_OBLIVIOUS
DEFAULT_ADAPTIVE = PAPER_ADAPTIVE
DEFAULT_TRANSFER = PAPER_TRANSFER
DEFAULT_EPS_CURVE = tuple(e / 255 for e in (1, 2, 4, 8, 12, 16))


def _keeps_rng_state(fn):
    """``fn`` run inside ``torch.random.fork_rng``: the caller's RNG state (CPU and the current
    CUDA device) is left as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return fn(*args, **kwargs)

    return wrapper


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_data(substitute, X, Y):
    from torch import nn

    if substitute is not None and not isinstance(substitute, nn.Module):
        raise TypeError(f"substitute must be an nn.Module or None, got {type(substitute).__name__}")
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or not X.is_floating_point():
        raise ValueError("X must be a float (N, C, H, W) tensor of images in [0, 1]")
    if not isinstance(Y, torch.Tensor) or Y.dim() != 1 or len(Y) != len(X):
        raise ValueError("Y must be an (N,) tensor of labels matching X")
    if len(X) == 0:
        raise ValueError("X is empty")


def make_plan(suite, settings, oblivious, adaptive, transfer, has_substitute) -> Plan:
    """Budgets and attack lists: explicit arguments first, then the suite's, then the paper's lists
    with ``AttackSettings()``. Every oblivious and transfer attack also runs adaptively."""
    if isinstance(suite, str):
        suite = get_suite(suite)
    if suite is not None and not isinstance(suite, Suite):
        raise TypeError(f"suite must be a suite name or a Suite, got {type(suite).__name__}")
    s = get_settings(settings) if settings is not None else (suite.settings if suite else AttackSettings())

    def pick(given, name, default):
        return [canonical_attack(a) for a in (given if given is not None else getattr(suite, name, default))]

    obl = pick(oblivious, "oblivious", DEFAULT_OBLIVIOUS)
    tr = pick(transfer, "transfer", DEFAULT_TRANSFER) if has_substitute else []
    ada = list(dict.fromkeys(pick(adaptive, "adaptive", DEFAULT_ADAPTIVE) + obl + tr))
    min_norm = frozenset(a for a in ada if is_min_norm(a, s))
    return Plan(s, obl, ada, tr, min_norm, suite.describe() if suite else None)


def _row(ctx, row, shared, plan, *, sanity, sanity_subset, curve, tol):
    """(numbers, sanity checks, sweeps, eps curve) of one row."""
    start, crafted_before = time.perf_counter(), ctx.crafted
    defended, ok_clean, ok, by_surrogate = row_masks(ctx, row, shared, plan)
    r = summarise_row(
        ok_clean,
        ok,
        by_surrogate,
        plan=plan,
        classifier_clean=float(shared.classifier_clean[row.classifier_label].float().mean()),
        chance=float(torch.bincount(ctx.Y).max()) / ctx.n,
    )
    c = eps_curve(ctx, row.name, defended, curve["eps"], curve["attack"], curve["subset"]) if curve else None
    seconds = time.perf_counter() - start
    sweep = sanity_sweeps(ctx, row.name, defended, sanity_subset) if sanity else None
    checks = row_checks(r, sweep, n=ctx.n, plan=plan, tol=tol)
    crafted = ctx.crafted - crafted_before
    r.update(
        classifier=row.classifier_label,
        broken=[f"{c['check']}: {c['detail']}" for c in checks if c["check"] in BROKEN_CHECKS and c["status"] == FLAG],
        n=ctx.n,
        seconds=seconds,
        images_per_second=crafted / seconds if crafted and seconds > 0 else None,
    )
    return r, checks, sweep, c


@_keeps_rng_state
def evaluate(
    defences: dict,
    classifier,
    substitute,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    suite: str | Suite | None = None,
    settings: AttackSettings | str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    oblivious=None,
    adaptive=None,
    transfer=None,
    sanity: bool = True,
    sanity_subset: int = 64,
    eps_curve: tuple | list | None = None,
    eps_curve_attack: str = "apgd-ce",
    eps_curve_subset: int | None = None,
    tolerance: float = 0.01,
    zero_threshold: float = 0.10,
    square_gap: float = 0.03,
    clean_drop: float = 0.10,
    chance_margin: float = 0.10,
    progress: bool = True,
    meta: dict | None = None,
) -> dict:
    """Robust accuracy of ``defence`` in front of its classifier for every row of ``defences``.

    ``defences``: ``{name: defence}`` (in front of ``classifier``), or per row ``Row(defence, classifier)``
    / ``(defence, classifier)`` for a row with its own classifier (``classifier`` may then be None).
    ``suite``: "paper", "standard", "quick" or a :class:`Suite`: budgets and attack lists, each
    overridden by ``settings`` (AttackSettings or a preset name) and ``oblivious`` / ``adaptive`` /
    ``transfer`` (attack names); with neither, the paper's lists and ``AttackSettings()``.

    Columns: Clean; oblivious attacks (crafted once per distinct classifier on that classifier alone,
    fed to each of its rows); adaptive attacks (through defence and classifier, with every backward
    surrogate of ``settings.surrogates``; per image the worst over them); transfer attacks (crafted
    once on ``substitute``; skipped when None). The headline is the **worst case**: an image counts as
    robust only if it is correct clean and under every attack run for its row (minimum-norm C&W-L2
    excluded); it is reported beside chance (the most frequent class's share).

    ``eps_curve``: radii (in [0, 1] units) at which ``eps_curve_attack`` runs adaptively on the first
    ``eps_curve_subset`` images (all: None), for the accuracy-vs-eps plot. ``sanity``: run the sweeps
    of the sanity checks (PGD vs eps and iterations, gradient statistics) on the first
    ``sanity_subset`` images; the checks from the table's own numbers always run. Tolerances: see
    :class:`~gcln_fast.evaluation.runner.Tolerances`. ``meta``: extra fields for ``table["meta"]``.
    All models are switched to eval mode. Deterministic for a fixed ``seed`` and batch size; the
    caller's RNG state is left as it was. Returns a JSON-serialisable dict (see ``write_report``).
    """
    rows = resolve_rows(defences, classifier)
    _check_data(substitute, X, Y)
    plan = make_plan(suite, settings, oblivious, adaptive, transfer, substitute is not None)
    curve = _curve_spec(eps_curve, eps_curve_attack, eps_curve_subset)
    if device is None:
        p = next(rows[0].classifier.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    batch_size, sanity_subset = _positive_int("batch_size", batch_size), _positive_int("sanity_subset", sanity_subset)
    ctx = Context(
        X.detach().float().cpu(),
        Y.detach().long().cpu(),
        plan.settings,
        batch_size,
        torch.device(device),
        seed,
        progress,
    )
    tol = Tolerances(tolerance, zero_threshold, square_gap, clean_drop, chance_margin)
    models = {id(m): m for m in [*(r.defence for r in rows), *(r.classifier for r in rows), substitute]}
    started = time.perf_counter()
    with contextlib.ExitStack() as layouts:  # the callers' models come back in their own layout
        for m in models.values():
            if m is None:
                continue
            m.eval()
            if isinstance(m, nn.Module):  # channels-last: bench/bench_memory_format.py
                layouts.enter_context(in_memory_format(m, preferred_memory_format(ctx.device)))
        shared = craft_shared(ctx, rows, substitute, plan)
        out = _all_rows(ctx, rows, shared, plan, sanity=sanity, sanity_subset=sanity_subset, curve=curve, tol=tol)
    info = dict(sanity=sanity, sanity_subset=sanity_subset, tol=tol, shared_seconds=shared.seconds)
    return _assemble(ctx, plan, out, info | {"total": time.perf_counter() - started}, meta)


def _all_rows(ctx, rows, shared, plan, **kw) -> dict:
    out = {"rows": {}, "sanity": {}, "sweeps": {}, "eps_curve": {}}
    for row in rows:
        r, checks, sweep, c = _row(ctx, row, shared, plan, **kw)
        out["rows"][row.name], out["sanity"][row.name] = r, checks
        if sweep is not None:
            out["sweeps"][row.name] = sweep
        if c is not None:
            out["eps_curve"][row.name] = c
    return out


def _curve_spec(eps_list, attack, subset):
    if eps_list is None:
        return None
    eps_list = [float(e) for e in eps_list] or list(DEFAULT_EPS_CURVE)
    if any(not 0 < e <= 1 for e in eps_list):
        raise ValueError(f"eps_curve radii must be in (0, 1] (images in [0, 1]), got {eps_list}")
    if subset is not None:
        _positive_int("eps_curve_subset", subset)
    return {"eps": eps_list, "attack": canonical_attack(attack), "subset": subset}


def _assemble(ctx: Context, plan: Plan, out: dict, info: dict, meta: dict | None) -> dict:
    total, n = info["total"], ctx.n
    used = dict.fromkeys(
        plan.oblivious + plan.adaptive + plan.transfer + [c["attack"] for c in out["eps_curve"].values()]
    )
    return {
        "kind": KIND,
        "meta": {
            "n": n,
            "seed": ctx.seed,
            "batch_size": ctx.batch_size,
            "device": str(ctx.device),
            "suite": plan.suite,
            "settings": plan.settings.to_dict(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "seconds": total,
            "seconds_per_100_images": 100 * total / n,
            "shared_attack_seconds": info["shared_seconds"],
            "adversarial_images": ctx.crafted,
            "images_per_second": ctx.crafted / total if total > 0 else None,
            "sanity_subset": min(info["sanity_subset"], n) if info["sanity"] else 0,
            "chance": float(torch.bincount(ctx.Y).max()) / n,
            **{k: getattr(info["tol"], k) for k in Tolerances.__dataclass_fields__},
            **(meta or {}),
        },
        "columns": {"oblivious": plan.oblivious, "adaptive": plan.adaptive, "transfer": plan.transfer},
        "min_norm": sorted(plan.min_norm),
        "labels": {a: LABELS[a] for a in used},
        **out,
    }


TIMING_KEYS = ("seconds", "seconds_per_100_images", "images_per_second", "shared_attack_seconds")


def strip_timing(table: dict) -> dict:
    """A copy of ``table`` without wall-clock fields (for comparing two runs)."""
    t = copy.deepcopy(table)
    for d in [t["meta"], *t["rows"].values(), *t.get("sweeps", {}).values()]:
        for k in TIMING_KEYS:
            d.pop(k, None)
    return t
