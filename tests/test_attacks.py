"""Attacks: each lowers the accuracy of a trained tiny model, stays in its eps-ball and [0, 1],
reaches targets more often than chance, leaves the model untouched, flows through QNT (BPDA) and
the adaptive backward switches, agrees with torchattacks, and rejects bad arguments with clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gcln_fast import QuantizedDCT
from gcln_fast.attacks import (
    ATTACKS,
    PRESETS,
    AttackSettings,
    adaptive_backward,
    apgd,
    apgd_t,
    bim,
    craft,
    cw_l2,
    fgsm,
    pgd,
    square,
)

import helpers as T

EPS = 8 / 255
FAST = AttackSettings(
    eps=EPS, step=2 / 255, steps=6, apgd_steps=6, cw_steps=15, cw_lr=0.03, n_target_classes=2, square_queries=300
)


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


@pytest.mark.parametrize("attack", ["fgsm", "bim", "pgd", "cw", "apgd-dlr", "apgd-ce", "square"])
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


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "cw", "apgd-ce", "square"])
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
        settings=FAST.replace(steps=2, apgd_steps=3, cw_steps=2, square_queries=3),
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
    for fn in (fgsm, bim, pgd, apgd, apgd_t, square):
        assert torch.equal(fn(model, x[:4], y[:4], eps=0.0), x[:4])


def test_presets():
    assert PRESETS["paper-cifar10"] == PRESETS["cifar10"] and PRESETS["paper-svhn"] == PRESETS["svhn"]
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
    with pytest.raises(ValueError, match="surrogates"):
        AttackSettings(surrogates=("linear",))
    with pytest.raises(ValueError, match="queries must be >= 1"):
        square(model, x, y, queries=0)
    with pytest.raises(ValueError, match="square loss"):
        square(model, x, y, loss="dlr")


# --------------------------------------------------------------------------- best iterate, C&W search, Square


def test_pgd_keeps_the_best_iterate(toy):
    """A defence whose gradients turn against the attacker after 3 steps: the last PGD iterate walks
    back toward the clean image, the best iterate keeps what the early steps found."""
    model, x, y = toy
    defended = nn.Sequential(T.LateReversal(3), model)
    kw = dict(eps=EPS, step=2 / 255, steps=12)
    best = pgd(defended, x, y, generator=torch.Generator().manual_seed(0), **kw)
    last = pgd(defended, x, y, best_iterate=False, generator=torch.Generator().manual_seed(0), **kw)
    _in_ball(best, x, EPS)
    acc_best, acc_last = T.accuracy(defended, best, y), T.accuracy(defended, last, y)
    assert acc_best <= acc_last - 0.2, (acc_best, acc_last)


def test_cw_binary_search_finds_smaller_perturbations(toy):
    model, x, y = toy
    x, y = x[:16], y[:16]
    single = cw_l2(model, x, y, c=10.0, steps=30, lr=0.02, search_steps=1)
    search = cw_l2(model, x, y, c=10.0, steps=30, lr=0.02, search_steps=5)
    with torch.no_grad():
        f_single, f_search = model(single).argmax(1) != y, model(search).argmax(1) != y
    assert float(f_single.float().mean()) >= 0.9 and bool((f_search >= f_single).all())
    l2 = lambda a: (a - x).flatten(1).norm(dim=1)[f_single & f_search]  # noqa: E731
    assert float(l2(search).mean()) < 0.8 * float(l2(single).mean())


def test_cw_linf_box_keeps_gradients_at_the_box_faces(toy):
    """Pixels at 0 or 1 sit on a face of the box [x - eps, x + eps] ∩ [0, 1]; the tanh parametrisation
    still moves them inward (no clipping that zeroes their gradient)."""
    model, x, y = toy
    x = x[:16].clone()
    x[:, :, :4] = 0.0  # a band of black pixels
    adv = cw_l2(model, x, y[:16], steps=30, eps=EPS, kappa=1e3)  # an unreachable kappa: all 30 steps count
    _in_ball(adv, x, EPS)
    assert float(adv[:, :, :4].max()) > EPS / 2, "pixels at 0 never moved"
    assert T.accuracy(model, adv, y[:16]) <= 0.2


def test_square_is_gradient_free(toy):
    """A zero-gradient layer stops every gradient attack and not Square."""
    model, x, y = toy
    defended = nn.Sequential(T.ZeroGrad(), model)
    torch.manual_seed(0)
    sq = square(defended, x, y, eps=EPS, queries=200)
    _in_ball(sq, x, EPS)
    grad = pgd(defended, x, y, eps=EPS, step=2 / 255, steps=5, generator=torch.Generator().manual_seed(0))
    assert T.accuracy(defended, sq, y) <= T.accuracy(defended, grad, y) - 0.3


def test_adaptive_backward_sets_and_restores_the_switches(toy):
    model, x, y = toy
    layer, clamp = T.FakeSurrogateLayer("sine"), T.FakeClamp()
    defence = nn.Sequential(layer, clamp)
    with adaptive_backward(nn.Sequential(defence, model), "cubic"):
        assert layer.surrogate == "cubic" and clamp.straight_through_clamp is True
    assert layer.surrogate == "sine" and clamp.straight_through_clamp is False
    with pytest.raises(RuntimeError, match="attack failed"), adaptive_backward(defence, "identity"):
        raise RuntimeError("attack failed")
    assert layer.surrogate == "sine" and clamp.straight_through_clamp is False
    with pytest.raises(ValueError, match="valid surrogates"), adaptive_backward(defence, "linear"):
        pass
    # craft's adaptive threat model runs the attack inside the switches, and only there
    settings = FAST.replace(steps=2, surrogates=("cubic", "identity"))
    craft("adaptive", "pgd", x[:4], y[:4], classifier=model, defence=defence, settings=settings)
    assert layer.seen == ["cubic", "cubic"] and clamp.seen[0] is True and clamp.seen[-1] is True
    craft("adaptive", "fgsm", x[:4], y[:4], classifier=model, defence=defence, settings=settings, surrogate="identity")
    assert layer.seen[-1] == "identity" and layer.surrogate == "sine"
    layer.seen.clear()
    craft("oblivious", "fgsm", x[:4], y[:4], classifier=nn.Sequential(defence, model), settings=settings)
    assert layer.seen == ["sine"], "the oblivious threat model leaves the model as it is"


def test_generator_clamp_is_straight_through_under_the_adaptive_attack():
    from gcln_fast.gcln.generator import Generator

    torch.manual_seed(0)
    G = Generator(width=4, blocks=1).eval()
    with torch.no_grad():
        G.tail.bias.fill_(2.0)  # every output pixel is pushed past 1 and clamped
    x = torch.rand(2, 3, 16, 16)

    def input_grad():
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(G(xr).sum(), xr)
        return g

    assert float(input_grad().abs().max()) == 0.0, "the plain clamp zeroes every gradient here"
    with adaptive_backward(G):
        assert float(input_grad().abs().min()) > 0.0
        assert G.straight_through_clamp is True
    assert G.straight_through_clamp is False


def test_adaptive_backward_drives_the_real_qnt_layer(toy):
    """The QNT layer's own ``surrogate`` switch (identity = BPDA, cubic, sine) under the adaptive attack:
    set for the attack only, and it changes the attacker's gradient."""
    model, x, y = toy
    layer = QuantizedDCT(10)
    defended = nn.Sequential(layer, model)

    def grad():
        xr = x[:8].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(defended(xr), y[:8]), xr)
        return g

    plain = grad()
    with adaptive_backward(defended, "identity"):
        torch.testing.assert_close(grad(), plain)  # BPDA is the layer's default backward
    with adaptive_backward(defended, "cubic"):
        assert layer.surrogate == "cubic"
        cubic = grad()
    assert layer.surrogate == "identity"
    assert torch.isfinite(cubic).all() and not torch.allclose(cubic, plain)
    settings = FAST.replace(surrogates=("cubic",))
    adv = craft("adaptive", "pgd", x, y, classifier=model, defence=layer, settings=settings)
    assert T.accuracy(defended, adv, y) <= 0.2 and layer.surrogate == "identity"


# --------------------------------------------------------------------------- torchattacks cross-check

CROSS_EPS = 3 / 255  # an eps where accuracy is neither ~0 nor ~clean, so the comparison means something


def _cross_data(n=64):
    model, x, y = T.trained(0)
    return model, x[:n], y[:n]


def test_cross_check_fgsm_pgd_with_torchattacks(capsys):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install .[test])")
    model, x, y = _cross_data()
    ours_f = T.accuracy(model, fgsm(model, x, y, eps=CROSS_EPS), y)
    theirs_f = T.accuracy(model, torchattacks.FGSM(model, eps=CROSS_EPS)(x, y), y)
    torch.manual_seed(0)
    ours_p = T.accuracy(model, pgd(model, x, y, eps=CROSS_EPS, step=CROSS_EPS / 4, steps=10, best_iterate=False), y)
    torch.manual_seed(0)
    theirs_p = T.accuracy(
        model, torchattacks.PGD(model, eps=CROSS_EPS, alpha=CROSS_EPS / 4, steps=10, random_start=True)(x, y), y
    )
    with capsys.disabled():
        print(
            f"\n[cross-check eps 3/255, n={len(x)}] FGSM ours {ours_f:.3f} torchattacks {theirs_f:.3f}; "
            f"PGD-10 (last iterate) ours {ours_p:.3f} torchattacks {theirs_p:.3f}; clean {T.accuracy(model, x, y):.3f}"
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


@pytest.mark.slow
def test_cross_check_apgd_t_and_square_with_torchattacks(capsys):
    """APGD-T and Square against torchattacks' ``APGDT`` and ``Square`` (ports of AutoAttack) on the same
    model, 128 images, budget and seed: within 3 points (both follow the reference's random draws, so
    they agree to the image unless float rounding splits a tie)."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install .[test])")
    model, x, y = _cross_data(128)
    # torchattacks runs n_classes - 1 targets: n_classes=4 asks it for 3, like ours
    torch.manual_seed(0)
    ours_t = T.accuracy(model, apgd_t(model, x, y, eps=CROSS_EPS, steps=10, n_target_classes=3), y)
    theirs_t = T.accuracy(model, torchattacks.APGDT(model, eps=CROSS_EPS, steps=10, seed=0, n_classes=4)(x, y), y)
    torch.manual_seed(0)
    ours_s = T.accuracy(model, square(model, x, y, eps=CROSS_EPS, queries=300), y)
    theirs_s = T.accuracy(model, torchattacks.Square(model, eps=CROSS_EPS, n_queries=300, seed=0)(x, y), y)
    with capsys.disabled():
        print(
            f"\n[cross-check eps 3/255, n={len(x)}] APGD-T (3 targets x 10 its) ours {ours_t:.3f} torchattacks "
            f"{theirs_t:.3f}; Square-300 ours {ours_s:.3f} torchattacks {theirs_s:.3f}; clean {T.accuracy(model, x, y):.3f}"
        )
    assert T.accuracy(model, x, y) - ours_t >= 0.2, "the comparison needs an eps where the attack works"
    assert abs(ours_t - theirs_t) <= 0.03
    assert abs(ours_s - theirs_s) <= 0.03


def test_restarts_and_binary_search(toy):
    model, x, y = toy
    x, y = x[:32], y[:32]
    eps = 3 / 255
    one = pgd(model, x, y, eps=eps, step=1 / 255, steps=4, generator=torch.Generator().manual_seed(0))
    three = pgd(model, x, y, eps=eps, step=1 / 255, steps=4, restarts=3, generator=torch.Generator().manual_seed(0))
    _in_ball(three, x, eps)
    # the first restart is the single run; later restarts can only add successes
    assert T.accuracy(model, three, y) <= T.accuracy(model, one, y)
    adv = cw_l2(model, x[:8], y[:8], steps=5, search_steps=2, eps=EPS)
    _in_ball(adv, x[:8], EPS)
