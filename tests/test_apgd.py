"""APGD (Croce & Hein 2020): schedule, strength on an undefended model, and BPDA through QNT alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gcln_fast import QuantizedDCT
from gcln_fast.attacks import AttackSettings, apgd, apgd_t, checkpoints, craft, dlr_loss, dlr_targeted_loss
from gcln_fast.attacks._common import linf_start

import helpers as T

EPS = 8 / 255


@pytest.fixture(scope="module")
def toy():
    model, x, y = T.trained(0)
    return model, x[:64], y[:64]


def test_checkpoints_follow_the_reference():
    # first interval int(0.22 n), each next shorter by int(0.03 n), at least int(0.06 n) (all >= 1)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(37) == [8, 15, 21, 26, 30, 33, 35, 37]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_random_start_is_on_the_surface_of_the_ball():
    x = torch.full((64, 3, 8, 8), 0.5)
    start = linf_start(x, 0.1, torch.Generator().manual_seed(0))
    d = (start - x).flatten(1).abs()
    torch.testing.assert_close(d.amax(1), torch.full((64,), 0.1))
    assert float(d.mean()) < 0.06, "the other pixels spread inside the ball"


def test_dlr_loss_values():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    y = torch.tensor([0, 0])
    # correct with margin 2 over the runner-up, scaled by z_pi1 - z_pi3 = 3 - 0
    assert dlr_loss(z, y, False)[0].item() == pytest.approx(-2 / 3)
    assert dlr_loss(z, y, False)[1].item() == pytest.approx((2 - 0) / (2 - 0))  # misclassified: positive loss
    t = torch.tensor([1, 1])
    # targeted: -(max_{j!=t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert dlr_loss(z, t, True)[0].item() == pytest.approx(-(3 - 1) / (3 - (0 - 1) / 2))
    with pytest.raises(ValueError, match="at least"):
        dlr_loss(z[:, :2], torch.tensor([0, 0]), False)
    # AutoAttack's APGD-T loss uses the true label y and the target t: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    t = torch.tensor([2, 2])
    assert dlr_targeted_loss(z, y, t)[0].item() == pytest.approx(-(3 - 0) / (3 - (0 - 1) / 2))
    assert dlr_targeted_loss(z, y, t)[1].item() == pytest.approx(-(0 - 1) / (2 - (0 - 1) / 2))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_breaks_undefended_model(toy, loss):
    model, x, y = toy
    assert T.accuracy(model, x, y) >= 0.9
    torch.manual_seed(0)
    adv = apgd(model, x, y, eps=EPS, steps=10, loss=loss)
    assert float((adv - x).abs().max()) <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert T.accuracy(model, adv, y) <= 0.02


def test_apgd_t_and_restarts(toy):
    model, x, y = toy
    torch.manual_seed(0)
    adv = apgd_t(model, x[:16], y[:16], eps=EPS, steps=5, n_target_classes=2)
    assert T.accuracy(model, adv, y[:16]) <= 0.1
    torch.manual_seed(0)
    xs, ys = x[:16].clone(), y[:16].clone()
    ys[:4] = (ys[:4] + 1) % T.NUM_CLASSES  # 4 images already "fooled"
    three = apgd(model, xs, ys, eps=2 / 255, steps=3, restarts=3)
    with torch.no_grad():
        wrong = model(xs).argmax(1) != ys
    assert bool(wrong[:4].all())
    assert torch.equal(three[wrong], xs[wrong]), "images already misclassified are returned unchanged"


def test_apgd_through_qnt_alone_is_broken(toy, capsys):
    """QNT alone (no generator) against BPDA: its straight-through backward lets APGD through."""
    model, x, y = toy
    q = QuantizedDCT(10)
    defended = nn.Sequential(q, model)
    clean_q = T.accuracy(defended, x, y)
    torch.manual_seed(0)
    obl = craft(
        "oblivious", "apgd-ce", x, y, classifier=model, defence=q, settings=AttackSettings(eps=EPS, apgd_steps=10)
    )
    oblivious = T.accuracy(defended, obl, y)
    torch.manual_seed(0)
    ada = apgd(defended, x, y, eps=EPS, steps=10, loss="ce")
    adaptive = T.accuracy(defended, ada, y)
    with capsys.disabled():
        print(
            f"\n[QNT q=10 alone, eps 8/255] clean {clean_q:.3f}, oblivious APGD-CE {oblivious:.3f}, adaptive (BPDA) APGD-CE {adaptive:.3f}"
        )
    assert clean_q >= 0.85
    assert adaptive <= 0.05, "BPDA through QNT alone must break it"
    assert adaptive <= oblivious + 0.02
    assert adaptive <= clean_q - 0.8


def test_apgd_eot_averages_a_randomised_defence(toy):
    model, x, y = toy

    class RandomNoise(nn.Module):
        def forward(self, v):
            return (v + 0.02 * torch.randn_like(v)).clamp(0, 1)

    defended = nn.Sequential(RandomNoise(), model)
    torch.manual_seed(0)
    adv = apgd(defended, x[:16], y[:16], eps=EPS, steps=4, eot=2)
    torch.manual_seed(1)
    assert T.accuracy(defended, adv, y[:16]) <= 0.1
