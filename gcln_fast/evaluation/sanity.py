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


def check_gradients(finite, zero_fraction, mean_abs, *, max_zero_fraction=0.0):
    """Input gradients through the defended model must be finite and non-zero (per image)."""
    check = "gradients through the defended model are non-zero and finite"
    if finite is None:
        return _skip(check, "the sanity sweeps were not run")
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


def check_square_vs_gradient(gradient_worst, with_square_worst, *, gap=0.03):
    """Square (gradient-free) must not break many images that every gradient attack left standing:
    worst case over the gradient attacks minus the worst case with Square added <= gap."""
    check = "Square (gradient-free) no better than the gradient attacks"
    if gradient_worst is None or with_square_worst is None:
        return _skip(check, "Square or no adaptive gradient attack was run")
    extra = gradient_worst - with_square_worst
    ok = extra <= gap
    detail = (
        f"gradient attacks' worst case {_pct(gradient_worst)}, with Square {_pct(with_square_worst)} "
        f"(Square alone breaks {_pct(extra)} more)"
    )
    if not ok:
        detail += " (a gradient-free attack beats every gradient attack: masked gradients)"
    return _result(check, ok, detail, gradient=gradient_worst, with_square=with_square_worst, extra=extra)


def check_targeted_vs_untargeted(apgd_t, apgd_ce, *, tol=0.01):
    """Targeted APGD-T (several targets, DLR loss) must do at least as well as untargeted APGD-CE."""
    check = "targeted APGD-T <= APGD-CE"
    if apgd_t is None or apgd_ce is None:
        return _skip(check, "APGD-T or APGD-CE was not run", apgd_t=apgd_t, apgd_ce=apgd_ce)
    ok = apgd_t <= apgd_ce + tol
    detail = f"APGD-T {_pct(apgd_t)} {'<=' if ok else '>'} APGD-CE {_pct(apgd_ce)}"
    if not ok:
        detail += " (the targeted attack is weaker: its gradients or its loss are being gamed)"
    return _result(check, ok, detail, apgd_t=apgd_t, apgd_ce=apgd_ce)


def check_clean_vs_classifier(clean, classifier_clean, *, max_drop=0.10):
    """The defence must not cost more than ``max_drop`` of the undefended classifier's clean accuracy."""
    check = "clean accuracy near the undefended classifier's"
    ok = clean >= classifier_clean - max_drop
    detail = f"clean {_pct(clean)} with the defence, {_pct(classifier_clean)} without"
    if not ok:
        detail += f" (a drop of more than {_pct(max_drop)}: the defence breaks the classifier)"
    return _result(check, ok, detail, clean=clean, classifier_clean=classifier_clean, max_drop=max_drop)


def check_above_chance(clean, chance, *, margin=0.10):
    """Clean accuracy must be clearly above chance (the most frequent class's share)."""
    check = "clean accuracy above chance"
    ok = clean > chance + margin
    detail = f"clean {_pct(clean)}, chance {_pct(chance)}"
    if not ok:
        detail += " (the defended model classifies at about chance: it is broken, its robust numbers mean nothing)"
    return _result(check, ok, detail, clean=clean, chance=chance, margin=margin)


def check_eps_response(clean, eps, accuracy, *, tol=0.01):
    """Accuracy must move as eps grows from 0 (clean) to the largest eps of the sweep: a flat curve
    means the model ignores its input (a constant output), not that it is robust."""
    check = "accuracy moves with eps"
    if len(eps) == 0 or clean is None:
        return _skip(check, "no eps sweep was run")
    curve = [clean, *accuracy]
    spread = max(curve) - min(curve)
    ok = spread >= tol or clean == 0  # all-wrong is flagged by the chance check
    detail = f"clean {_pct(clean)}, " + ", ".join(
        f"{255 * e:.0f}/255: {_pct(a)}" for e, a in zip(eps, accuracy, strict=True)
    )
    if not ok:
        detail += " (flat from clean to the largest eps: the model ignores its input)"
    return _result(check, ok, detail, clean=clean, eps=list(eps), accuracy=list(accuracy))


# The checks whose FLAG means the defended model is broken (not merely masking gradients).
BROKEN_CHECKS = (
    "clean accuracy near the undefended classifier's",
    "clean accuracy above chance",
    "accuracy moves with eps",
)
