"""The steps of :func:`gcln_fast.evaluation.evaluate`: the attack plan, the shared adversarial sets,
one row's masks and numbers, its eps curve, sweeps and sanity checks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks import GRADIENT_FREE, AttackSettings, adaptive_backward, attack_model, has_surrogates
from . import sanity as S
from .sweeps import correct, craft_all, derive_seed, eps_sweep, gradient_stats, iteration_sweep

LABELS = {
    "fgsm": "FGS",
    "pgd": "PGD",
    "bim": "BIM",
    "cw": "C&W",
    "apgd-ce": "APGD-CE",
    "apgd-dlr": "APGD-DLR",
    "apgd-t": "APGD-T",
    "square": "Square",
}


@dataclass(frozen=True)
class Plan:
    """What runs: budgets, attack names per threat model, the minimum-norm attacks kept out of the
    worst case, and the suite's name for the report."""

    settings: AttackSettings
    oblivious: list
    adaptive: list
    transfer: list
    min_norm: frozenset = frozenset()
    suite: str | None = None


@dataclass
class Context:
    """The images, budgets and bookkeeping shared by every attack of one evaluation."""

    X: torch.Tensor
    Y: torch.Tensor
    settings: AttackSettings
    batch_size: int
    device: torch.device
    seed: int
    progress: bool
    crafted: int = 0  # adversarial images produced, for images/second

    @property
    def n(self) -> int:
        return len(self.X)

    def craft(self, attack, model, key, desc, *, surrogate=None, settings=None, m=None):
        """Adversarial examples of ``attack`` on ``model`` for the first ``m`` images (all: None)."""
        X, Y = (self.X, self.Y) if m is None else (self.X[:m], self.Y[:m])
        kw = dict(batch_size=self.batch_size, device=self.device, progress=self.progress, desc=desc)
        seed = derive_seed(self.seed, *key)
        adv = craft_all(attack, model, X, Y, settings=settings or self.settings, seed=seed, surrogate=surrogate, **kw)
        self.crafted += len(X)
        return adv

    def correct(self, model, adv, key) -> torch.Tensor:
        Y = self.Y[: len(adv)]
        return correct(model, adv, Y, batch_size=self.batch_size, device=self.device, seed=derive_seed(self.seed, *key))


def _has_adaptive_knobs(model) -> bool:
    return has_surrogates(model) or any(hasattr(m, "straight_through_clamp") for m in model.modules())


# --------------------------------------------------------------------------- shared sets


@dataclass
class Shared:
    """Oblivious sets per distinct classifier (with its clean correctness) and the transfer sets."""

    oblivious: dict = field(default_factory=dict)  # classifier label -> {attack: adv}
    classifier_clean: dict = field(default_factory=dict)  # classifier label -> bool mask
    transfer: dict = field(default_factory=dict)  # attack -> adv
    seconds: float = 0.0


def craft_shared(ctx: Context, rows, substitute, plan: Plan) -> Shared:
    """Oblivious sets crafted once per distinct classifier, transfer sets once on ``substitute``
    (classifiers and substitute are deterministic in eval mode: no EOT there)."""
    start = time.perf_counter()
    shared, eot1 = Shared(), ctx.settings.replace(eot=1)
    for row in rows:
        label = row.classifier_label
        if label in shared.oblivious:
            continue
        prefix = ("oblivious",) if label == "classifier" else ("oblivious", label)
        suffix = "" if label == "classifier" else f" ({label})"
        shared.classifier_clean[label] = ctx.correct(row.classifier, ctx.X, (label, "clean"))
        shared.oblivious[label] = {
            a: ctx.craft(a, row.classifier, (*prefix, a), f"oblivious {LABELS[a]}{suffix}", settings=eot1)
            for a in plan.oblivious
        }
    shared.transfer = {
        a: ctx.craft(a, substitute, ("transfer", a), f"transfer {LABELS[a]}", settings=eot1) for a in plan.transfer
    }
    shared.seconds = time.perf_counter() - start
    return shared


# --------------------------------------------------------------------------- one row


def surrogates_for(attack, defended, settings) -> tuple:
    """The backward surrogates an adaptive ``attack`` runs with: none for a gradient-free attack, all of
    ``settings.surrogates`` where a module has a ``surrogate``, else the first (the clamp still changes)."""
    if attack in GRADIENT_FREE:
        return (None,)
    return settings.surrogates if has_surrogates(defended) else settings.surrogates[:1]


def adaptive_masks(ctx: Context, row, defended, attacks, oblivious_sets):
    """Per-image correctness under every adaptive attack: the AND over the surrogates run (the worst
    case over surrogates), and the per-surrogate masks."""
    reuse = isinstance(row.defence, nn.Identity) and ctx.settings.eot == 1 and not _has_adaptive_knobs(row.classifier)
    masks, by_surrogate = {}, {}
    for a in attacks:
        if reuse and a in oblivious_sets:  # no defence: the adaptive attack is the oblivious one
            masks[a] = ctx.correct(defended, oblivious_sets[a], (row.name, "eval", "adaptive", a))
            continue
        surrogates = surrogates_for(a, defended, ctx.settings)
        for s in surrogates:
            tag = f" [{s}]" if len(surrogates) > 1 else ""
            adv = ctx.craft(
                a, defended, (row.name, "adaptive", a, s), f"{row.name}: adaptive {LABELS[a]}{tag}", surrogate=s
            )
            m = ctx.correct(defended, adv, (row.name, "eval", "adaptive", a, s))
            if len(surrogates) > 1:
                by_surrogate.setdefault(s, {})[a] = m
            masks[a] = m if a not in masks else masks[a] & m
    return masks, by_surrogate


def _worst(clean, groups, keep=lambda a: True):
    m = clean.clone()
    for masks in groups:
        for a, v in masks.items():
            if keep(a):
                m &= v
    return float(m.float().mean())


def _acc(masks: dict, keep=lambda a: True) -> dict:
    return {a: float(v.float().mean()) for a, v in masks.items() if keep(a)}


def summarise_row(ok_clean, ok, by_surrogate, *, plan: Plan, classifier_clean, chance) -> dict:
    """Accuracies and worst cases of one row from its per-image masks; minimum-norm attacks are
    reported but kept out of every worst case."""
    bounded = lambda a: a not in plan.min_norm  # noqa: E731
    gradient = lambda a: bounded(a) and a not in GRADIENT_FREE  # noqa: E731
    adaptive = ok["adaptive"]
    has_gradient = any(gradient(a) for a in adaptive)
    has_square = "square" in adaptive
    worst_case = _worst(ok_clean, ok.values(), bounded)
    return {
        "clean": float(ok_clean.float().mean()),
        **{g: _acc(masks) for g, masks in ok.items()},
        "adaptive_by_surrogate": {s: _acc(m) for s, m in by_surrogate.items()},
        "worst_case": worst_case,
        "worst_case_oblivious": _worst(ok_clean, [ok["oblivious"]], bounded),
        "worst_case_adaptive": _worst(ok_clean, [adaptive], bounded),
        "worst_case_transfer": _worst(ok_clean, [ok["transfer"]], bounded) if ok["transfer"] else None,
        "worst_case_gradient": _worst(ok_clean, [adaptive], gradient) if has_gradient else None,
        "worst_case_gradient_and_square": (
            _worst(ok_clean, [adaptive], lambda a: gradient(a) or a == "square")
            if has_gradient and has_square
            else None
        ),
        "classifier_clean": classifier_clean,
        "chance": chance,
        "worst_case_above_chance": worst_case - chance,
    }


def row_masks(ctx: Context, row, shared: Shared, plan: Plan):
    """(defended model, clean mask, {threat model: {attack: mask}}, per-surrogate masks) of one row."""
    defended = attack_model("adaptive", classifier=row.classifier, defence=row.defence)
    ok_clean = ctx.correct(defended, ctx.X, (row.name, "eval", "clean"))
    ok = {
        "oblivious": {
            a: ctx.correct(defended, adv, (row.name, "eval", "oblivious", a))
            for a, adv in shared.oblivious[row.classifier_label].items()
        },
        "transfer": {
            a: ctx.correct(defended, adv, (row.name, "eval", "transfer", a)) for a, adv in shared.transfer.items()
        },
    }
    ok["adaptive"], by_surrogate = adaptive_masks(
        ctx, row, defended, plan.adaptive, shared.oblivious[row.classifier_label]
    )
    return (
        defended,
        ok_clean,
        {"oblivious": ok["oblivious"], "adaptive": ok["adaptive"], "transfer": ok["transfer"]},
        by_surrogate,
    )


# --------------------------------------------------------------------------- eps curve and sanity sweeps


def eps_curve(ctx: Context, name, defended, eps_list, attack, subset) -> dict:
    """Accuracy of the defended model under the adaptive ``attack`` at each eps (per image, the worst
    over the surrogates run), on the first ``subset`` images (all: None); PGD's step scales with eps."""
    m = ctx.n if subset is None else min(subset, ctx.n)
    clean = ctx.correct(defended, ctx.X[:m], (name, "curve", "clean"))
    accuracy = []
    for e in eps_list:
        s = ctx.settings.replace(eps=e, step=ctx.settings.step * e / ctx.settings.eps if ctx.settings.eps else e / 4)
        ok = clean.clone()
        for sur in surrogates_for(attack, defended, s):
            adv = ctx.craft(
                attack,
                defended,
                (name, "curve", attack, e, sur),
                f"{name}: eps curve {255 * e:.3g}/255",
                surrogate=sur,
                settings=s,
                m=m,
            )
            ok &= ctx.correct(defended, adv, (name, "curve-eval", attack, e, sur))
        accuracy.append(float(ok.float().mean()))
    return {
        "attack": attack,
        "subset": m,
        "eps": list(eps_list),
        "accuracy": accuracy,
        "clean": float(clean.float().mean()),
    }


def sanity_sweeps(ctx: Context, name, defended, subset) -> dict:
    """Adaptive PGD vs eps (with the clean point) and vs iterations, and the attacker's gradient
    statistics, on the first ``subset`` images (first surrogate, straight-through clamp)."""
    t0 = time.perf_counter()
    m = min(subset, ctx.n)
    xs, ys = ctx.X[:m], ctx.Y[:m]
    s = ctx.settings
    kw = dict(
        batch_size=ctx.batch_size,
        device=ctx.device,
        seed=derive_seed(ctx.seed, name, "sanity"),
        surrogate=s.surrogates[0],
    )
    clean = float(ctx.correct(defended, xs, (name, "sanity", "clean")).float().mean())
    eps_acc = eps_sweep(defended, xs, ys, settings=s, eps_list=list(s.eps_sweep), **kw)
    it_acc = iteration_sweep(defended, xs, ys, settings=s, iterations=list(s.iter_sweep), **kw)
    with adaptive_backward(defended, s.surrogates[0]):
        grads = gradient_stats(defended, xs, ys, batch_size=ctx.batch_size, device=ctx.device)
    return {
        "subset": m,
        "eps": {"eps": list(s.eps_sweep), "accuracy": eps_acc, "clean": clean},
        "iterations": {"iterations": list(s.iter_sweep), "accuracy": it_acc},
        "gradient": grads,
        "seconds": time.perf_counter() - t0,
    }


@dataclass(frozen=True)
class Tolerances:
    tolerance: float = 0.01  # accuracy slack before a FLAG (at least one image)
    zero_threshold: float = 0.10  # accuracy the eps sweep must reach at its largest eps
    square_gap: float = 0.03  # images Square may break beyond the gradient attacks
    clean_drop: float = 0.10  # clean accuracy a defence may cost
    chance_margin: float = 0.10  # clean accuracy must exceed chance by this much


def row_checks(r: dict, sweep: dict | None, *, n: int, plan: Plan, tol: Tolerances) -> list[dict]:
    """The sanity checks of one row, in a fixed order (SKIP where their data was not measured)."""
    t = max(tol.tolerance, 1.0 / n)
    ts = max(tol.tolerance, 1.0 / sweep["subset"]) if sweep else t
    e = sweep["eps"] if sweep else {"eps": [], "accuracy": [], "clean": None}
    it = sweep["iterations"] if sweep else {"iterations": [], "accuracy": []}
    g = sweep["gradient"] if sweep else None
    bounded = lambda d: {a: v for a, v in d.items() if a not in plan.min_norm}  # noqa: E731
    ada, obl = bounded(r["adaptive"]), bounded(r["oblivious"])
    return [
        S.check_iterative_vs_single_step(ada.get("pgd"), ada.get("fgsm"), tol=t, threat_model="adaptive"),
        S.check_iterative_vs_single_step(obl.get("pgd"), obl.get("fgsm"), tol=t, threat_model="oblivious"),
        S.check_adaptive_vs_transfer(ada, bounded(r["transfer"]), tol=t),
        S.check_eps_sweep(e["eps"], e["accuracy"], tol=ts, zero_threshold=tol.zero_threshold),
        S.check_iteration_sweep(it["iterations"], it["accuracy"], tol=ts),
        S.check_gradients(*((g["finite"], g["zero_fraction"], g["mean_abs"]) if g else (None, None, None))),
        S.check_adaptive_vs_oblivious(
            ada, obl, tol=t, worst_adaptive=r["worst_case_adaptive"], worst_oblivious=r["worst_case_oblivious"]
        ),
        S.check_square_vs_gradient(
            r["worst_case_gradient"], r["worst_case_gradient_and_square"], gap=max(tol.square_gap, t)
        ),
        S.check_targeted_vs_untargeted(ada.get("apgd-t"), ada.get("apgd-ce"), tol=t),
        S.check_eps_response(e["clean"], e["eps"], e["accuracy"], tol=ts),
        S.check_clean_vs_classifier(r["clean"], r["classifier_clean"], max_drop=tol.clean_drop),
        S.check_above_chance(r["clean"], r["chance"], margin=tol.chance_margin),
    ]
