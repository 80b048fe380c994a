"""Sanity checks for gradient masking (Athalye et al. 2018; Carlini et al. 2019).

Each check is a pure function of measured accuracies and returns a dict
``{"check", "status", "detail", "values"}`` with status "PASS", "FLAG" or "SKIP". A FLAG is a
finding about the defence (its robustness numbers are probably inflated by masked or obfuscated
gradients), not an error. ``tol`` is the slack in accuracy (a fraction) before a FLAG is raised.
"""

from __future__ import annotations

import math

PASS, FLAG, SKIP = "PASS", "FLAG", "SKIP"


def _pct(a) -> str:
    return "n/a" if a is None else f"{100 * a:.2f}%"


def _result(check, ok, detail, **values):
    return {"check": check, "status": PASS if ok else FLAG, "detail": detail, "values": values}


def _skip(check, why, **values):
    return {"check": check, "status": SKIP, "detail": why, "values": values}


def check_iterative_vs_single_step(pgd, fgs, *, tol=0.01, threat_model="adaptive"):
    """Iterative PGD must do at least as well as single-step FGS: acc(PGD) <= acc(FGS) + tol."""
    check = f"iterative <= single-step ({threat_model})"
    if pgd is None or fgs is None:
        return _skip(check, "PGD or FGS was not run", pgd=pgd, fgs=fgs)
    ok = pgd <= fgs + tol
    rel = "<=" if ok else ">"
    return _result(
        check,
        ok,
        f"PGD {_pct(pgd)} {rel} FGS {_pct(fgs)}"
        + ("" if ok else " (a single step beats the iterative attack: masked gradients)"),
        pgd=pgd,
        fgs=fgs,
    )


def check_adaptive_vs_transfer(adaptive: dict, transfer: dict, *, tol=0.01):
    """White-box adaptive attacks must do at least as well as black-box transfer:
    min adaptive accuracy <= min transfer accuracy + tol."""
    check = "white-box adaptive <= black-box transfer"
    if not adaptive or not transfer:
        return _skip(check, "no adaptive or no transfer attack was run (substitute model missing?)")
    a_name, a = min(adaptive.items(), key=lambda kv: kv[1])
    t_name, t = min(transfer.items(), key=lambda kv: kv[1])
    ok = a <= t + tol
    detail = f"best white-box ({a_name}) {_pct(a)} {'<=' if ok else '>'} best transfer ({t_name}) {_pct(t)}"
    if not ok:
        detail += " (black-box beats white-box: the white-box gradients are uninformative)"
    return _result(check, ok, detail, adaptive=a, adaptive_attack=a_name, transfer=t, transfer_attack=t_name)


def check_eps_sweep(eps, accuracy, *, tol=0.01, zero_threshold=0.10):
    """Accuracy must not rise as eps grows, and must fall to <= zero_threshold at the largest eps."""
    check = "accuracy -> 0 as eps grows"
    if len(eps) == 0:
        return _skip(check, "no eps sweep was run")
    rises = [(eps[i], eps[i + 1]) for i in range(len(eps) - 1) if accuracy[i + 1] > accuracy[i] + tol]
    ok = not rises and accuracy[-1] <= zero_threshold
    curve = ", ".join(f"{255 * e:.0f}/255: {_pct(a)}" for e, a in zip(eps, accuracy, strict=True))
    why = []
    if rises:
        why.append("accuracy rises with eps")
    if accuracy[-1] > zero_threshold:
        why.append(f"still {_pct(accuracy[-1])} > {_pct(zero_threshold)} at eps {255 * eps[-1]:.0f}/255")
    return _result(
        check, ok, curve + ("" if ok else " (" + "; ".join(why) + ")"), eps=list(eps), accuracy=list(accuracy)
    )


def check_iteration_sweep(iterations, accuracy, *, tol=0.01):
    """Accuracy must not rise with more attack iterations."""
    check = "accuracy does not rise with iterations"
    if len(iterations) == 0:
        return _skip(check, "no iteration sweep was run")
    rises = [
        (iterations[i], iterations[i + 1]) for i in range(len(iterations) - 1) if accuracy[i + 1] > accuracy[i] + tol
    ]
    ok = not rises
    curve = ", ".join(f"{it} its: {_pct(a)}" for it, a in zip(iterations, accuracy, strict=True))
    return _result(
        check,
        ok,
        curve + ("" if ok else f" (rises between {rises})"),
        iterations=list(iterations),
        accuracy=list(accuracy),
    )


def check_gradients(finite: bool, zero_fraction: float, mean_abs: float, *, max_zero_fraction=0.0):
    """Input gradients through the defended model must be finite and non-zero (per image)."""
    check = "gradients through the defended model are non-zero and finite"
    ok = bool(finite) and zero_fraction <= max_zero_fraction and math.isfinite(mean_abs) and mean_abs > 0
    detail = (
        f"finite={bool(finite)}, images with an all-zero gradient: {_pct(zero_fraction)}, mean |grad| {mean_abs:.3g}"
    )
    if not ok:
        detail += " (shattered/vanishing gradients: use BPDA/EOT before trusting white-box numbers)"
    return _result(check, ok, detail, finite=bool(finite), zero_fraction=zero_fraction, mean_abs=mean_abs)


def check_adaptive_vs_oblivious(
    adaptive: dict, oblivious: dict, *, tol=0.01, worst_adaptive=None, worst_oblivious=None
):
    """An adaptive attack must be at least as strong as its oblivious version (same attack)."""
    check = "adaptive <= oblivious"
    common = [k for k in oblivious if k in adaptive]
    if not common:
        return _skip(check, "no attack was run under both threat models")
    bad = [k for k in common if adaptive[k] > oblivious[k] + tol]
    if worst_adaptive is not None and worst_oblivious is not None and worst_adaptive > worst_oblivious + tol:
        bad.append("worst case")
    ok = not bad
    detail = ", ".join(f"{k}: {_pct(adaptive[k])} vs {_pct(oblivious[k])}" for k in common)
    if not ok:
        detail += f" (the adaptive attack is weaker for {bad}: its gradients through the defence are broken)"
    return _result(
        check, ok, detail, adaptive={k: adaptive[k] for k in common}, oblivious={k: oblivious[k] for k in common}
    )
