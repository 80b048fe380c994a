"""``evaluate``: every defence row under oblivious, adaptive (BPDA) and transfer attacks, the
per-image worst case, and the gradient-masking sanity checks."""

from __future__ import annotations

import functools
import platform
import sys
import time
import zlib

import torch
from torch import nn

from ..attacks import AttackSettings, attack_model, canonical_attack, get_settings, margin_loss, run_attack
from ..utils.metrics import batched_correct
from ..utils.modules import frozen
from . import sanity as S

KIND = "evaluation"
DEFAULT_OBLIVIOUS = ("fgsm", "pgd", "bim", "cw")
DEFAULT_ADAPTIVE = ("fgsm", "pgd", "bim", "cw", "apgd-ce", "apgd-dlr")
DEFAULT_TRANSFER = ("fgsm", "pgd")
LABELS = {
    "fgsm": "FGS",
    "pgd": "PGD",
    "bim": "BIM",
    "cw": "C&W",
    "apgd-ce": "APGD-CE",
    "apgd-dlr": "APGD-DLR",
    "apgd-t": "APGD-T",
}


def _tqdm(iterable, *, desc, total, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)


def derive_seed(seed: int, *parts) -> int:
    """A seed for one (row, threat model, attack) run that does not depend on the order of runs."""
    return (int(seed) * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % (2**31 - 1)


def _batches(n, batch_size):
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def correct(model, X, Y, *, batch_size=256, device="cpu", seed=None) -> torch.Tensor:
    """Per-image correctness (bool, on CPU) of ``model`` on (X, Y); one forward pass per image."""
    if seed is not None:
        torch.manual_seed(seed)
    return batched_correct(model, X, Y, batch_size=batch_size, device=device)


def craft_all(attack, model, X, Y, *, settings, batch_size, device, seed, progress=False, desc="") -> torch.Tensor:
    """Batched adversarial examples (on CPU) of ``attack`` against ``model``; the global RNG is seeded
    with ``seed`` first so random starts and randomised defences are reproducible."""
    torch.manual_seed(seed)
    out = torch.empty_like(X)
    spans = _batches(len(X), batch_size)
    for a, b in _tqdm(spans, desc=desc, total=len(spans), enabled=progress):
        out[a:b] = run_attack(attack, model, X[a:b].to(device), Y[a:b].to(device), settings=settings).cpu()
    return out


def gradient_stats(model, X, Y, *, batch_size, device) -> dict:
    """Finiteness and per-image zero fraction of the margin-loss input gradient through ``model``
    (the margin loss does not saturate the way cross-entropy does on confident models)."""
    finite, zero, total_abs, count = True, 0, 0.0, 0
    with frozen(model):
        for a, b in _batches(len(X), batch_size):
            x = X[a:b].to(device).requires_grad_(True)
            with torch.enable_grad():
                loss = margin_loss(model(x), Y[a:b].to(device), False).sum()
                (g,) = torch.autograd.grad(loss, x)
            finite &= bool(torch.isfinite(g).all())
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            zero += int((g.flatten(1).abs().amax(1) == 0).sum())
            total_abs += float(g.abs().mean(dim=(1, 2, 3)).sum())
            count += b - a
    return {"finite": finite, "zero_fraction": zero / max(count, 1), "mean_abs": total_abs / max(count, 1)}


def _pgd_accuracy(model, X, Y, *, settings, batch_size, device, seed, sweep, value) -> float:
    """Accuracy of ``model`` under PGD with ``settings`` at one point (``value``) of a ``sweep``;
    the attack is seeded with ``(seed, sweep, value)``, the evaluation with ``(seed, sweep-eval, value)``."""
    adv = craft_all(
        "pgd",
        model,
        X,
        Y,
        settings=settings,
        batch_size=batch_size,
        device=device,
        seed=derive_seed(seed, sweep, value),
    )
    ok = correct(model, adv, Y, batch_size=batch_size, device=device, seed=derive_seed(seed, f"{sweep}-eval", value))
    return float(ok.float().mean())


def eps_sweep(model, X, Y, *, settings, eps_list, batch_size, device, seed) -> list[float]:
    """Adaptive PGD accuracy at each eps (``settings.steps`` iterations, step ``max(step, 2.5 eps / steps)``)."""
    accs = []
    for e in eps_list:
        step = max(settings.step, 2.5 * e / settings.steps)
        s = settings.replace(eps=e, step=step)
        accs.append(
            _pgd_accuracy(
                model, X, Y, settings=s, batch_size=batch_size, device=device, seed=seed, sweep="eps", value=e
            )
        )
    return accs


def iteration_sweep(model, X, Y, *, settings, iterations, batch_size, device, seed) -> list[float]:
    """Adaptive PGD accuracy (eps and step of ``settings``) after each number of iterations."""
    accs = []
    for it in iterations:
        s = settings.replace(steps=it)
        accs.append(
            _pgd_accuracy(
                model, X, Y, settings=s, batch_size=batch_size, device=device, seed=seed, sweep="iters", value=it
            )
        )
    return accs


def _keeps_rng_state(fn):
    """``fn`` run inside ``torch.random.fork_rng``: the caller's RNG state (CPU and the current
    CUDA device) is left as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return fn(*args, **kwargs)

    return wrapper


def _check_inputs(defences, classifier, substitute, X, Y):
    if not isinstance(defences, dict) or not defences:
        raise ValueError("defences must be a non-empty dict {row name: nn.Module} (nn.Identity() for 'No defence')")
    for name, d in defences.items():
        if not isinstance(name, str) or not isinstance(d, nn.Module):
            raise TypeError(f"defences must map str -> nn.Module, got {name!r} -> {type(d).__name__}")
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    if substitute is not None and not isinstance(substitute, nn.Module):
        raise TypeError(f"substitute must be an nn.Module or None, got {type(substitute).__name__}")
    if not isinstance(X, torch.Tensor) or X.dim() != 4 or not X.is_floating_point():
        raise ValueError("X must be a float (N, C, H, W) tensor of images in [0, 1]")
    if not isinstance(Y, torch.Tensor) or Y.dim() != 1 or len(Y) != len(X):
        raise ValueError("Y must be an (N,) tensor of labels matching X")
    if len(X) == 0:
        raise ValueError("X is empty")


@_keeps_rng_state
def evaluate(
    defences: dict,
    classifier: nn.Module,
    substitute: nn.Module | None,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    settings: AttackSettings | str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    oblivious=DEFAULT_OBLIVIOUS,
    adaptive=DEFAULT_ADAPTIVE,
    transfer=DEFAULT_TRANSFER,
    sanity: bool = True,
    sanity_subset: int = 64,
    tolerance: float = 0.01,
    zero_threshold: float = 0.10,
    progress: bool = True,
    meta: dict | None = None,
) -> dict:
    """Robust accuracy of ``nn.Sequential(defence, classifier)`` for every row of ``defences``.

    ``settings``: AttackSettings or a preset name; ``oblivious`` / ``adaptive`` / ``transfer``: attack
    names run under each threat model; ``tolerance``: accuracy slack before a sanity FLAG (at least one
    image); ``zero_threshold``: accuracy the eps sweep must reach at its largest eps; ``meta``: extra
    fields for ``table["meta"]`` (dataset name, checkpoint paths).

    Columns: Clean; ``oblivious`` attacks (crafted on the classifier alone, once, and fed to every
    defended model); ``adaptive`` attacks (BPDA: crafted through the defended model itself, per row);
    ``transfer`` attacks (crafted once on ``substitute``; skipped when it is None). The headline is the
    **worst case**: an image counts as robust only if it is classified correctly clean and under every
    attack run for its row. With ``sanity``, the gradient-masking checks of :mod:`.sanity` run on the
    first ``sanity_subset`` images (eps sweep ``settings.eps_sweep``, iteration sweep
    ``settings.iter_sweep``, gradient statistics). All models are switched to eval mode. Deterministic
    for a fixed ``seed`` and batch size; the caller's RNG state is left as it was. Returns a
    JSON-serialisable dict (see ``write_report``).
    """
    _check_inputs(defences, classifier, substitute, X, Y)
    settings = get_settings(settings)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(sanity_subset, bool) or not isinstance(sanity_subset, int) or sanity_subset < 1:
        raise ValueError(f"sanity_subset must be a positive int, got {sanity_subset!r}")
    oblivious = [canonical_attack(a) for a in oblivious]
    transfer = [canonical_attack(a) for a in transfer] if substitute is not None else []
    # Every defended number stands beside the same attack run adaptively through the defence.
    adaptive = list(dict.fromkeys([canonical_attack(a) for a in adaptive] + oblivious + transfer))
    if device is None:
        p = next(classifier.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    X = X.detach().float().cpu()
    Y = Y.detach().long().cpu()
    n = len(X)
    classifier.eval()
    if substitute is not None:
        substitute.eval()
    for d in defences.values():
        d.eval()
    started = time.perf_counter()
    crafted = 0  # adversarial images produced, for images/second

    def timed_craft(attack, model, desc, key, eot=None):
        nonlocal crafted
        s = settings if eot is None else settings.replace(eot=eot)
        adv = craft_all(
            attack,
            model,
            X,
            Y,
            settings=s,
            batch_size=batch_size,
            device=device,
            seed=derive_seed(seed, *key),
            progress=progress,
            desc=desc,
        )
        crafted += n
        return adv

    # shared adversarial sets: oblivious (classifier only) and transfer (substitute)
    shared_start = time.perf_counter()
    # (the classifier and the substitute are deterministic in eval mode: no EOT needed there)
    obl_adv = {a: timed_craft(a, classifier, f"oblivious {LABELS[a]}", ("oblivious", a), eot=1) for a in oblivious}
    tr_adv = {a: timed_craft(a, substitute, f"transfer {LABELS[a]}", ("transfer", a), eot=1) for a in transfer}
    shared_seconds = time.perf_counter() - shared_start

    rows, sanity_out, sweeps = {}, {}, {}
    for name, defence in defences.items():
        row_start = time.perf_counter()
        crafted_before = crafted
        defended = attack_model("adaptive", classifier=classifier, defence=defence)

        def evseed(*k, _name=name):
            return derive_seed(seed, _name, "eval", *k)

        ok_clean = correct(defended, X, Y, batch_size=batch_size, device=device, seed=evseed("clean"))
        ok = {"oblivious": {}, "adaptive": {}, "transfer": {}}
        for group, shared_adv in (("oblivious", obl_adv), ("transfer", tr_adv)):
            for a, adv in shared_adv.items():
                ok[group][a] = correct(defended, adv, Y, batch_size=batch_size, device=device, seed=evseed(group, a))
        for a in adaptive:
            if isinstance(defence, nn.Identity) and a in obl_adv and settings.eot == 1:
                adv = obl_adv[a]  # no defence: the adaptive attack is the oblivious one
            else:
                adv = timed_craft(a, defended, f"{name}: adaptive {LABELS[a]}", (name, "adaptive", a))
            ok["adaptive"][a] = correct(
                defended, adv, Y, batch_size=batch_size, device=device, seed=evseed("adaptive", a)
            )

        def worst(groups, _ok=ok, _clean=ok_clean):
            m = _clean.clone()
            for g in groups:
                for v in _ok[g].values():
                    m &= v
            return float(m.float().mean())

        acc = {g: {a: float(v.float().mean()) for a, v in ok[g].items()} for g in ok}
        row_seconds = time.perf_counter() - row_start
        row_crafted = crafted - crafted_before
        rows[name] = {
            "clean": float(ok_clean.float().mean()),
            **acc,
            "worst_case": worst(("oblivious", "adaptive", "transfer")),
            "worst_case_oblivious": worst(("oblivious",)),
            "worst_case_adaptive": worst(("adaptive",)),
            "worst_case_transfer": worst(("transfer",)) if transfer else None,
            "n": n,
            "seconds": row_seconds,
            "images_per_second": row_crafted / row_seconds if row_crafted and row_seconds > 0 else None,
        }

        if sanity:
            m = min(sanity_subset, n)
            xs, ys = X[:m], Y[:m]
            sweep_seed = derive_seed(seed, name, "sanity")
            eps_list = list(settings.eps_sweep)
            its = list(settings.iter_sweep)
            t0 = time.perf_counter()
            eps_acc = eps_sweep(
                defended,
                xs,
                ys,
                settings=settings,
                eps_list=eps_list,
                batch_size=batch_size,
                device=device,
                seed=sweep_seed,
            )
            it_acc = iteration_sweep(
                defended,
                xs,
                ys,
                settings=settings,
                iterations=its,
                batch_size=batch_size,
                device=device,
                seed=sweep_seed,
            )
            grads = gradient_stats(defended, xs, ys, batch_size=batch_size, device=device)
            sweeps[name] = {
                "subset": m,
                "eps": {"eps": eps_list, "accuracy": eps_acc},
                "iterations": {"iterations": its, "accuracy": it_acc},
                "gradient": grads,
                "seconds": time.perf_counter() - t0,
            }
            tol = max(tolerance, 1.0 / n)
            tol_sub = max(tolerance, 1.0 / m)
            r = rows[name]
            sanity_out[name] = [
                S.check_iterative_vs_single_step(
                    r["adaptive"].get("pgd"), r["adaptive"].get("fgsm"), tol=tol, threat_model="adaptive"
                ),
                S.check_iterative_vs_single_step(
                    r["oblivious"].get("pgd"), r["oblivious"].get("fgsm"), tol=tol, threat_model="oblivious"
                ),
                S.check_adaptive_vs_transfer(r["adaptive"], r["transfer"], tol=tol),
                S.check_eps_sweep(eps_list, eps_acc, tol=tol_sub, zero_threshold=zero_threshold),
                S.check_iteration_sweep(its, it_acc, tol=tol_sub),
                S.check_gradients(grads["finite"], grads["zero_fraction"], grads["mean_abs"]),
                S.check_adaptive_vs_oblivious(
                    r["adaptive"],
                    r["oblivious"],
                    tol=tol,
                    worst_adaptive=r["worst_case_adaptive"],
                    worst_oblivious=r["worst_case_oblivious"],
                ),
            ]

    total = time.perf_counter() - started
    return {
        "kind": KIND,
        "meta": {
            "n": n,
            "seed": seed,
            "batch_size": batch_size,
            "device": str(device),
            "settings": settings.to_dict(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seconds": total,
            "shared_attack_seconds": shared_seconds,
            "adversarial_images": crafted,
            "images_per_second": crafted / total if total > 0 else None,
            "sanity_subset": min(sanity_subset, n) if sanity else 0,
            "tolerance": tolerance,
            "zero_threshold": zero_threshold,
            **(meta or {}),
        },
        "columns": {"oblivious": oblivious, "adaptive": adaptive, "transfer": transfer},
        "labels": {a: LABELS[a] for a in dict.fromkeys(oblivious + adaptive + transfer)},
        "rows": rows,
        "sanity": sanity_out,
        "sweeps": sweeps,
    }


TIMING_KEYS = ("seconds", "images_per_second", "shared_attack_seconds")


def strip_timing(table: dict) -> dict:
    """A copy of ``table`` without wall-clock fields (for comparing two runs)."""
    import copy

    t = copy.deepcopy(table)
    for k in TIMING_KEYS:
        t["meta"].pop(k, None)
    for r in t["rows"].values():
        for k in TIMING_KEYS:
            r.pop(k, None)
    for s in t["sweeps"].values():
        s.pop("seconds", None)
    return t
