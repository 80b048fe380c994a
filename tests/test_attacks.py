"""Attacks: each lowers the accuracy of a trained tiny model, stays in its eps-ball and [0, 1],
reaches targets more often than chance, leaves the model untouched, flows through QNT (BPDA),
agrees with torchattacks, and rejects bad arguments with clear errors."""

from __future__ import annotations

import _attack_toys as T
import pytest
import torch
from torch import nn

from gcln_fast import QuantizedDCT
from gcln_fast.attacks import (
    ATTACKS,
    PRESETS,
    AttackSettings,
    apgd,
    bim,
    craft,
    cw_l2,
    fgsm,
    pgd,
)

EPS = 8 / 255
FAST = AttackSettings(eps=EPS, step=2 / 255, steps=6, apgd_steps=6, cw_steps=15, cw_lr=0.03, n_target_classes=2)


@pytest.fixture(scope="module")
def toy():
    model, x, y = T.trained(0)
    return model, x[:48], y[:48]


def _in_ball(adv, x, eps):
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert not adv.requires_grad
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_lowers_accuracy_within_ball(toy, attack):
    model, x, y = toy
    clean = T.accuracy(model, x, y)
    assert clean >= 0.85, "the toy model should be accurate"
    torch.manual_seed(0)
    adv = craft("oblivious", attack, x, y, classifier=model, settings=FAST)
    _in_ball(adv, x, EPS)
    acc = T.accuracy(model, adv, y)
    assert acc <= clean - 0.5, f"{attack}: {clean:.2f} -> {acc:.2f}"


def test_unbounded_cw_is_small_l2_and_valid(toy):
    model, x, y = toy
    adv = cw_l2(model, x[:16], y[:16], c=1.0, steps=25, lr=0.02)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    fooled = model(adv).argmax(1) != y[:16]
    assert fooled.float().mean() >= 0.5
    l2 = (adv - x[:16]).flatten(1).norm(dim=1)
    # minimal perturbations: well below the L2 size of an 8/255 L-inf sign perturbation (8/255 * sqrt(3072) = 1.74)
    assert float(l2[fooled].median()) < 1.0


@pytest.mark.parametrize("attack", ["fgsm", "bim", "pgd", "cw", "apgd-dlr", "apgd-ce"])
def test_targeted_reaches_target_more_than_chance(toy, attack):
    model, x, y = toy
    g = torch.Generator().manual_seed(1)
    target = (y + 1 + torch.randint(0, T.NUM_CLASSES - 1, y.shape, generator=g)) % T.NUM_CLASSES
    assert bool((target != y).all())
    adv = craft("oblivious", attack, x, target, classifier=model, settings=FAST, targeted=True)
    _in_ball(adv, x, EPS)
    with torch.no_grad():
        hit = (model(adv).argmax(1) == target).float().mean().item()
    chance = 1 / T.NUM_CLASSES
    floor = 0.15 if attack == "fgsm" else 0.5
    assert hit > max(chance, floor), f"{attack}: target hit rate {hit:.2f}"


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "cw", "apgd-ce"])
def test_model_left_untouched(attack):
    model = T.small_cnn(3).eval()
    model[0].weight.requires_grad_(False)  # a mixed requires_grad state must be restored exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x, y = T.make_data(8, seed=5)
    craft(
        "adaptive",
        attack,
        x,
        y,
        classifier=model,
        defence=QuantizedDCT(10),
        settings=FAST.replace(steps=2, apgd_steps=3, cw_steps=2),
    )
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bpda_gradient_flows_through_qnt(toy):
    model, x, y = toy
    defended = nn.Sequential(QuantizedDCT(10), model)
    xr = x[:8].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(defended(xr), y[:8])
    (g,) = torch.autograd.grad(loss, xr)
    assert torch.isfinite(g).all()
    assert (g.flatten(1).abs().amax(1) > 0).all(), "every image must get a non-zero BPDA gradient"
    # straight-through: the gradient through QNT is the classifier's gradient at QNT(x)
    xq = QuantizedDCT(10)(x[:8]).detach().requires_grad_(True)
    (g2,) = torch.autograd.grad(nn.functional.cross_entropy(model(xq), y[:8]), xq)
    torch.testing.assert_close(g, g2)
    # and the adaptive attack uses it: it breaks QNT alone
    adv = craft("adaptive", "pgd", x, y, classifier=model, defence=QuantizedDCT(10), settings=FAST)
    assert T.accuracy(defended, adv, y) <= 0.1


def test_eot_and_generator_are_deterministic(toy):
    model, x, y = toy
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = pgd(model, x[:8], y[:8], eps=EPS, step=1 / 255, steps=3, generator=g1, eot=2)
    b = pgd(model, x[:8], y[:8], eps=EPS, step=1 / 255, steps=3, generator=g2, eot=2)
    assert torch.equal(a, b)


def test_eps_zero_is_identity(toy):
    model, x, y = toy
    for fn in (fgsm, bim, pgd, apgd):
        assert torch.equal(fn(model, x[:4], y[:4], eps=0.0), x[:4])


def test_presets():
    assert PRESETS["cifar10"].eps == pytest.approx(8 / 255) and PRESETS["cifar10"].step == pytest.approx(1 / 255)
    assert PRESETS["cifar10"].steps == 10
    for name in ("svhn", "embedded"):
        assert PRESETS[name].eps == pytest.approx(12 / 255) and PRESETS[name].step == pytest.approx(3 / 255)
        assert PRESETS[name].steps == 10
    assert PRESETS["bpda"].eps == pytest.approx(8 / 255) and 10 <= PRESETS["bpda"].steps <= 100


def test_bad_arguments(toy):
    model, x, y = toy
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="valid attacks"):
        craft("oblivious", "deepfool", x, y, classifier=model)
    with pytest.raises(ValueError, match="valid threat models"):
        craft("grey-box", "pgd", x, y, classifier=model)
    with pytest.raises(ValueError, match="substitute"):
        craft("transfer", "pgd", x, y, classifier=model)
    with pytest.raises(ValueError, match="defence"):
        craft("adaptive", "pgd", x, y, classifier=model)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        bim(model, x, y, steps=0)
    with pytest.raises(ValueError, match="step must be > 0"):
        pgd(model, x, y, step=0.0)
    with pytest.raises(TypeError, match="steps must be an int"):
        pgd(model, x, y, steps=2.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="y must be"):
        fgsm(model, x, y[:2])
    with pytest.raises(ValueError, match="loss"):
        apgd(model, x, y, loss="hinge")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        AttackSettings(eps=-1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        AttackSettings(steps=0)
    with pytest.raises(ValueError, match="valid presets"):
        craft("oblivious", "pgd", x, y, classifier=model, settings="imagenet")


# --------------------------------------------------------------------------- torchattacks cross-check

CROSS_EPS = 3 / 255  # an eps where accuracy is neither ~0 nor ~clean, so the comparison means something


def _cross_data():
    model, x, y = T.trained(0)
    return model, x[:64], y[:64]


def test_cross_check_fgsm_pgd_with_torchattacks(capsys):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install .[test])")
    model, x, y = _cross_data()
    ours_f = T.accuracy(model, fgsm(model, x, y, eps=CROSS_EPS), y)
    theirs_f = T.accuracy(model, torchattacks.FGSM(model, eps=CROSS_EPS)(x, y), y)
    torch.manual_seed(0)
    ours_p = T.accuracy(model, pgd(model, x, y, eps=CROSS_EPS, step=CROSS_EPS / 4, steps=10), y)
    torch.manual_seed(0)
    theirs_p = T.accuracy(
        model, torchattacks.PGD(model, eps=CROSS_EPS, alpha=CROSS_EPS / 4, steps=10, random_start=True)(x, y), y
    )
    with capsys.disabled():
        print(
            f"\n[cross-check eps 3/255, n={len(x)}] FGSM ours {ours_f:.3f} torchattacks {theirs_f:.3f}; "
            f"PGD-10 ours {ours_p:.3f} torchattacks {theirs_p:.3f}; clean {T.accuracy(model, x, y):.3f}"
        )
    assert ours_f == pytest.approx(theirs_f, abs=1e-9)  # FGSM is deterministic: identical
    assert abs(ours_p - theirs_p) <= 0.05


def test_cross_check_apgd_with_torchattacks(capsys):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install .[test])")
    model, x, y = _cross_data()
    rows = []
    for loss in ("ce", "dlr"):
        torch.manual_seed(0)
        ours = T.accuracy(model, apgd(model, x, y, eps=CROSS_EPS, steps=10, loss=loss), y)
        theirs = T.accuracy(model, torchattacks.APGD(model, eps=CROSS_EPS, steps=10, loss=loss, seed=0)(x, y), y)
        rows.append((loss, ours, theirs))
    with capsys.disabled():
        print(
            "\n"
            + "; ".join(
                f"[cross-check eps 3/255] APGD-{lo.upper()}-10 ours {o:.3f} torchattacks {t:.3f}" for lo, o, t in rows
            )
        )
    for _, ours, theirs in rows:
        assert abs(ours - theirs) <= 0.05


def test_restarts_and_binary_search(toy):
    model, x, y = toy
    x, y = x[:32], y[:32]
    eps = 3 / 255
    one = pgd(model, x, y, eps=eps, step=1 / 255, steps=4, generator=torch.Generator().manual_seed(0))
    three = pgd(model, x, y, eps=eps, step=1 / 255, steps=4, restarts=3, generator=torch.Generator().manual_seed(0))
    _in_ball(three, x, eps)
    # the first restart is the single run; later restarts can only add successes
    assert T.accuracy(model, three, y) <= T.accuracy(model, one, y)
    adv = cw_l2(model, x[:8], y[:8], c=0.1, steps=5, lr=0.05, search_steps=2, eps=EPS)
    _in_ball(adv, x[:8], EPS)
