"""GCLN training options: adaptive schedule, CE/TRADES terms, joint fine-tuning of C, the divergence
guard, the default attack mix, a spectral-normalised detector."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gcln_fast import qnt
from gcln_fast.gcln import Detector, Generator, load_generator, train_gcln
from gcln_fast.gcln.crafting import (
    DEFAULT_ATTACK_MIX,
    adaptive_fraction,
    attack_mix_around,
    craft_batch,
    scale_mix,
)
from gcln_fast.gcln.train import load_gcln_classifier

from helpers import ATTACKS, MIX, toy_data, trained_classifier

SMALL = dict(
    detector_epochs=0,
    batch_size=32,
    attack_mix=MIX,
    attack_fns=ATTACKS,
    generator_kwargs={"width": 8, "blocks": 1},
    detector_kwargs={"width": 8},
    perceptual="classifier",
    progress=False,
    seed=1,
)


@pytest.fixture(scope="module")
def toy():
    x, y = toy_data(96)
    return x, y, trained_classifier(x, y)


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_adaptive_fraction_schedule():
    assert adaptive_fraction(0, 100, 1.0, 0.5) == 0.0  # starts oblivious
    assert adaptive_fraction(25, 100, 1.0, 0.5) == 0.5
    assert adaptive_fraction(50, 100, 0.8, 0.5) == pytest.approx(0.8)  # reaches the final share and stays
    assert adaptive_fraction(99, 100, 0.8, 0.5) == pytest.approx(0.8)
    assert adaptive_fraction(0, 100, 0.7, 0.0) == pytest.approx(0.7)  # no ramp
    assert adaptive_fraction(10, 100, 0.0, 0.5) == 0.0


def test_craft_batch_crafts_a_share_through_g_and_c():
    seen = []

    def spy(model, x, y, **_):
        through_g = isinstance(model, nn.Sequential) and isinstance(model[0], Generator)
        if through_g:  # the attacker differentiates a frozen G with the straight-through output clamp
            assert model[0].straight_through_clamp and not any(p.requires_grad for p in model[0].parameters())
        seen.append((through_g, x.shape[0]))
        return x

    G, C = Generator(q=10, width=4, blocks=0), nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))
    _, k = craft_batch(C, G, x, y, [{"attack": "spy"}], {"spy": spy}, torch.Generator().manual_seed(0), 0.5)
    assert k == 4 and sorted(seen) == [(False, 4), (True, 4)]
    assert not G.straight_through_clamp and all(p.requires_grad for p in G.parameters())  # restored


def test_scale_mix_scales_radius_and_step_only():
    mix = ({"attack": "pgd", "eps": 0.04, "step": 0.01, "steps": 7}, {"attack": "fgsm", "eps": 0.05})
    half = scale_mix(mix, 0.5)
    assert half[0] == {"attack": "pgd", "eps": 0.02, "step": 0.005, "steps": 7}
    assert half[1] == {"attack": "fgsm", "eps": 0.025}
    assert scale_mix(mix, 1.0) == mix and mix[0]["eps"] == 0.04  # the settings themselves untouched
    with pytest.raises(ValueError, match="factor"):
        scale_mix(mix, 1.5)


def test_eps_ramp_grows_the_training_radius(toy, tmp_path):
    """With eps_ramp the attacks of the G steps see a radius rising linearly to the mix's (never 0);
    phase 1 (D alone) always gets the full radius."""
    x, y, C = toy
    seen = []

    def recording_fgsm(model, x, y, eps, **_):
        seen.append(eps)
        return x

    kw = {**SMALL, "detector_epochs": 1, "attack_mix": ({"attack": "fgsm", "eps": 0.04},)}
    kw["attack_fns"] = {"fgsm": recording_fgsm}
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=2, eps_ramp=0.5, guard_size=0, **kw)
    n_d = sum(1 for s in r["history"]["steps"] if s["phase"] == 1)
    ramp = seen[n_d:]
    assert seen[:n_d] == [0.04] * n_d
    total = len(ramp)
    assert total == 2 * (96 // 32) and r["steps"] == total
    want = [0.04 * min(1.0, (k + 1) / (0.5 * total)) for k in range(total)]
    assert ramp == pytest.approx(want)
    scales = [s["eps_scale"] for s in r["history"]["steps"] if s["phase"] == 2]
    assert scales == pytest.approx([w / 0.04 for w in want])


def test_attack_mix_around_centres_on_the_evaluation_budget():
    mix = attack_mix_around(8 / 255, steps=5)
    assert [m["attack"] for m in mix] == ["pgd", "pgd", "pgd", "fgsm"]
    assert sorted(m["eps"] for m in mix if m["attack"] == "pgd") == pytest.approx([4 / 255, 8 / 255, 12 / 255])
    with pytest.raises(ValueError, match="eps"):
        attack_mix_around(0.0)
    # PGD adversarial training's attack alone: what the adaptive variants train on
    from gcln_fast.gcln.presets import training_attacks

    eps = 12 / 255
    alone = attack_mix_around(eps, steps=5, spread=(1.0,), fgsm=False)
    assert alone == ({"attack": "pgd", "eps": eps, "step": eps / 4, "steps": 5},)
    assert training_attacks("finetune", eps, steps=5) == training_attacks("adaptive", eps, steps=5) == alone
    assert training_attacks("paper", eps, steps=5) == attack_mix_around(eps, steps=5)
    assert training_attacks("no-la", eps, steps=5, mix=DEFAULT_ATTACK_MIX) == tuple(DEFAULT_ATTACK_MIX)


def test_ce_term_moves_g(toy, tmp_path):
    x, y, C = toy
    plain = train_gcln(C, (x, y), out_dir=tmp_path / "a", epochs=1, lam=1.0, **SMALL)
    with_ce = train_gcln(C, (x, y), out_dir=tmp_path / "b", epochs=1, lam=1.0, mu=1.0, **SMALL)
    assert all(s["loss_ce"] == 0 for s in plain["history"]["steps"])  # mu = 0: the paper's loss
    assert all(s["loss_ce"] > 0 for s in with_ce["history"]["steps"])
    assert not torch.equal(_params(plain["generator"]), _params(with_ce["generator"]))


def test_training_runs_channels_last_and_hands_back_c_in_its_own_layout(toy, tmp_path):
    x, y, C = toy  # channels-last: the layout preferred_memory_format picks (bench/bench_memory_format.py)
    first = next(m for m in C.modules() if isinstance(m, nn.Conv2d))
    seen = []
    hook = first.register_forward_pre_hook(
        lambda mod, inp: seen.append(
            (mod.weight.is_contiguous(), inp[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    try:
        r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=1, mu=1.0, adaptive=1.0, finetune_classifier=True, **SMALL)
    finally:
        hook.remove()
    assert seen and all(not w and cl for w, cl in seen)  # C's weights and its inputs channels-last while training
    assert first.weight.is_contiguous()  # the caller's C is handed back in NCHW
    assert r["generator"].head[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_finetune_classifier_trains_a_copy_and_checkpoints_it(toy, tmp_path):
    x, y, C = toy
    before = _params(C).clone()
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=1, finetune_classifier=True, mu=1.0, adaptive=1.0, **SMALL)
    Cf = r["classifier"]
    assert Cf is not C and torch.equal(_params(C), before)  # C itself is never modified
    assert all(p.requires_grad for p in C.parameters())  # and its flags are restored
    assert not torch.equal(_params(Cf), before)
    loaded = load_gcln_classifier(tmp_path / "gcln.pt", C)
    probe = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe), Cf(probe))
    assert all(s["adaptive_fraction"] == 1.0 for s in r["history"]["steps"] if s["phase"] == 2)
    with pytest.raises(ValueError, match="finetune_classifier"):
        train_gcln(C, (x, y), out_dir=tmp_path, epochs=2, resume=True, mu=1.0, **SMALL)
    with pytest.raises(ValueError, match="mu > 0 or beta > 0"):
        train_gcln(C, (x, y), out_dir=tmp_path / "x", epochs=1, finetune_classifier=True, **SMALL)


def test_clean_pass_off_trains_g_on_the_attacked_images_alone(toy, tmp_path, monkeypatch):
    x, y, C = toy
    trained_on = []  # batch sizes G is trained on (its parameters need gradients; not the attacker's view)
    forward = Generator.forward

    def spy(self, inp):
        if any(p.requires_grad for p in self.parameters()) and torch.is_grad_enabled():
            trained_on.append(inp.shape[0])
        return forward(self, inp)

    monkeypatch.setattr(Generator, "forward", spy)
    kw = dict(out_dir=tmp_path / "on", epochs=1, finetune_classifier=True, mu=1.0, adaptive=1.0, **SMALL)
    both = train_gcln(C, (x, y), **kw)
    assert set(trained_on) == {2 * SMALL["batch_size"]}  # [x*, x] by default
    trained_on.clear()
    alone = train_gcln(C, (x, y), **{**kw, "out_dir": tmp_path / "off", "clean_pass": False})
    assert set(trained_on) == {SMALL["batch_size"]}
    steps = [s for s in alone["history"]["steps"] if s["phase"] == 2]
    assert all(s["loss_kl"] == 0 and s["loss_ce"] > 0 for s in steps)
    assert not torch.equal(_params(both["generator"]), _params(alone["generator"]))
    with pytest.raises(ValueError, match="clean_pass"):
        train_gcln(C, (x, y), out_dir=tmp_path / "x", epochs=1, beta=1.0, clean_pass=False, **SMALL)


def test_lr_decay_takes_g_and_c_down_a_cosine_and_leaves_d(toy, tmp_path, monkeypatch):
    from gcln_fast.gcln.train import _Run

    x, y, C = toy
    rates = []  # (G, C, D) learning rates at each G update
    update = _Run.update_g

    def spy(self, terms, w):
        rates.append(tuple(o.param_groups[0]["lr"] for o in (self.opt_g, self.opt_c, self.opt_d)))
        return update(self, terms, w)

    monkeypatch.setattr(_Run, "update_g", spy)
    kw = dict(epochs=2, finetune_classifier=True, mu=1.0, lr=1e-3, lr_c=2e-3, lr_d=5e-4, guard_size=0, **SMALL)
    train_gcln(C, (x, y), out_dir=tmp_path / "const", **kw)
    assert set(rates) == {(1e-3, 2e-3, 5e-4)}
    rates.clear()
    r = train_gcln(C, (x, y), out_dir=tmp_path / "decay", lr_decay=True, **kw)
    g, c, d = zip(*rates, strict=True)
    assert len(g) == r["steps"] >= 4 and g[0] == 1e-3 and c[0] == 2e-3
    assert all(a > b for a, b in zip(g[:-1], g[1:], strict=True)) and g[-1] < 0.5e-3  # a cosine to 1% over the G steps
    assert c == pytest.approx(tuple(2 * v for v in g)) and set(d) == {5e-4}


def test_guard_stops_a_diverging_generator_visibly(toy, tmp_path, capfd):
    x, y, C = toy
    # lr 5 makes G's residual explode in a few steps: clean accuracy through G collapses
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=2, lr=5.0, guard_size=32, guard_action="stop", **SMALL)
    assert r["stopped_by_guard"] and r["steps"] == 0  # the last epoch that passed is the untrained G
    probe = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(tmp_path / "gcln.pt")(probe), qnt(probe, 10).clamp(0, 1))
    assert "GUARD epoch 1" in capfd.readouterr().err
    events = r["history"]["guard"]
    assert events[-1]["drop"] > 0.03 and "stopped" in events[-1]["action"]


def test_guard_backs_off_the_learning_rates(toy, tmp_path):
    x, y, C = toy
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=1, lr=5.0, guard_size=32, guard_backoffs=1, **SMALL)
    actions = [e["action"] for e in r["history"]["guard"][1:]]
    assert "back-off 1/1" in actions[0]
    ck = torch.load(tmp_path / "gcln.pt", weights_only=True)
    assert ck["opt_g"]["param_groups"][0]["lr"] == pytest.approx(2.5)  # halved once
    assert ck["guard_backoffs"] == 1
    # either the lower rate passed, or the guard stopped after its one back-off; never silently
    assert r["steps"] == 2 or (r["stopped_by_guard"] and "stopped" in actions[-1])


def test_back_offs_outlive_a_resume_without_the_guard(toy, tmp_path):
    """The rates follow the back-offs of the checkpoint also in a session without a guard, and the
    next checkpoint keeps counting them (one rule: ``_Run.set_rates``)."""
    from gcln_fast.utils.checkpoint import atomic_save

    x, y, C = toy
    train_gcln(C, (x, y), out_dir=tmp_path, epochs=1, lr=1e-3, guard_size=32, **SMALL)
    ck = torch.load(tmp_path / "gcln.pt", weights_only=True)
    ck["guard_backoffs"] = 2  # as if the guard had halved the rates twice
    atomic_save(ck, tmp_path / "gcln.pt")
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=2, lr=1e-3, guard_size=0, resume=True, force=True, **SMALL)
    assert r["steps"] > ck["steps"]
    ck2 = torch.load(tmp_path / "gcln.pt", weights_only=True)
    assert ck2["guard_backoffs"] == 2
    assert ck2["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.25e-3)
    assert ck2["opt_d"]["param_groups"][0]["lr"] == pytest.approx(0.25e-3)  # D at G's rate (lr_d unset)


def test_default_attack_mix_runs_the_real_attacks(tmp_path):
    x, y = toy_data(64, contrast=0.05)
    C = trained_classifier(x, y)
    kw = {k: v for k, v in SMALL.items() if k not in ("attack_mix", "attack_fns")}
    r = train_gcln(C, (x, y), out_dir=tmp_path, epochs=1, **kw)
    assert r["history"]["epochs"][-1]["acc_attacked_no_defence"] < 0.9  # the mix's PGD/FGSM fool C
    import json

    cfg = json.loads((tmp_path / "history.json").read_text())["config"]["train"]["attack_mix"]
    assert cfg == [dict(m) for m in DEFAULT_ATTACK_MIX]


def test_spectral_norm_detector_is_lipschitz_bounded():
    torch.manual_seed(0)
    D = Detector(width=8, spectral_norm=True).train()
    x = torch.rand(4, 3, 32, 32)
    for _ in range(10):  # power iterations converge in train mode
        D(x)
    sigma = torch.linalg.matrix_norm(D.head.weight.detach(), ord=2)
    assert float(sigma) == pytest.approx(1.0, abs=0.05)
    assert Detector(width=8).config["spectral_norm"] is False


def test_gcln_train_variant_flag_applies_the_preset_and_flags_override_it(tmp_path):
    import argparse

    from gcln_fast.commands.train_gcln import _knob_kwargs, add_parser
    from gcln_fast.gcln.presets import VARIANTS
    from gcln_fast.models import build_classifier, save_classifier

    clf = tmp_path / "c.pt"
    save_classifier(build_classifier("small_cnn", 10), clf, arch="small_cnn", num_classes=10)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"), "train")

    def kwargs(*flags):
        return _knob_kwargs(parser.parse_args(["train", "--classifier", str(clf), "--out", "o", *flags]))

    assert kwargs() == {}  # the paper's variant: train_gcln's own defaults
    assert kwargs("--variant", "finetune") == VARIANTS["finetune"]
    assert kwargs("--variant", "finetune", "--lr", "0.002", "--lambda", "0.7") == {
        **VARIANTS["finetune"],
        "lr": 0.002,
        "lam": 0.7,
    }
    assert kwargs("--variant", "no-la")["lam"] == 1.0
    assert VARIANTS["finetune"]["clean_pass"] is False
    assert kwargs("--variant", "finetune", "--clean-pass")["clean_pass"] is True
    assert kwargs("--no-clean-pass")["clean_pass"] is False
    assert kwargs("--variant", "finetune", "--no-lr-decay")["lr_decay"] is False
    assert kwargs("--lr-decay")["lr_decay"] is True


def test_detector_rate_follows_g_unless_set():
    from gcln_fast.gcln import GCLNSettings

    assert GCLNSettings().replace(lr=0.01).d_rate == 0.01  # lr_d defaults to G's rate, also after replace
    assert GCLNSettings(lr_d=0.003).replace(lr=0.01).d_rate == 0.003
    assert GCLNSettings(lr=0.002).recorded(10, 1)["lr_d"] == 0.002
