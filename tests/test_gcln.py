"""GCLN: G, D, the perceptual loss, training/checkpoint/resume, the on-the-fly clean set, load_generator."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from gcln_fast.gcln import Detector, Generator, PerceptualLoss, load_generator, train_gcln
from gcln_fast.gcln.buffer import CleanBuffer, update_clean_buffer

from helpers import ATTACKS, MIX, pgd, toy_data, trained_classifier

SMALL_G = {"width": 8, "blocks": 1}


@pytest.fixture(scope="module")
def toy():
    x, y = toy_data(192)
    return x, y, trained_classifier(x, y)


@pytest.mark.parametrize("output", ["clamp", "sigmoid"])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 30, 26)])
def test_generator_range_and_shape(output, shape):
    g = Generator(q=10, output=output, qnt_features=True, **SMALL_G)
    for p in g.tail.parameters():  # make the residual non-trivial
        nn.init.normal_(p, std=0.5)
    x = torch.rand(shape)
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_generator_starts_as_qnt_and_uses_the_fused_op():
    from gcln_fast import qnt

    g = Generator(q=10, **SMALL_G)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(g(x), qnt(x, 10).clamp(0, 1))
    assert g.qnt.backend == "auto"


def test_trainable_q_receives_gradient():
    g = Generator(q=10, trainable_q=True, **SMALL_G)
    for p in g.tail.parameters():
        nn.init.normal_(p, std=0.1)
    g(torch.rand(2, 3, 32, 32)).sum().backward()
    grads = [p.grad for n, p in g.named_parameters() if "qnt" in n]
    assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)


def test_detector_logits():
    assert Detector(width=8)(torch.rand(5, 3, 32, 32)).shape == (5, 2)


def test_perceptual_fallback_warns(toy, monkeypatch, tmp_path):
    monkeypatch.setenv("GCLN_VGG19_WEIGHTS", str(tmp_path / "absent.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    x, _, C = toy
    with pytest.warns(UserWarning, match="VGG-19"):
        loss = PerceptualLoss(C)
    assert loss.source == "classifier"
    out = x[:4].clone().requires_grad_(True)
    val = loss(out, x[:4].flip(0))
    val.backward()
    assert val.item() > 0 and out.grad is not None
    assert float(loss(x[:4], x[:4]).detach()) == 0.0
    loss.remove()
    with pytest.raises(FileNotFoundError):
        PerceptualLoss(None)  # never a silent random network
    with pytest.raises(FileNotFoundError):
        PerceptualLoss(C, source="vgg19")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PerceptualLoss(C, source="classifier").remove()  # asked for explicitly: no warning


class _Fixed(nn.Module):
    """A 'classifier' predicting class 1 for images whose mean is above 0.5, else 0."""

    def forward(self, x):
        hi = (x.mean(dim=(1, 2, 3)) > 0.5).float()
        return torch.stack([1 - hi, hi], dim=1)


def test_clean_buffer_grows_only_with_correct_images():
    buf = CleanBuffer(capacity=6)
    imgs = torch.cat([torch.full((3, 3, 8, 8), 0.9), torch.full((3, 3, 8, 8), 0.1)])
    labels = torch.tensor([1, 1, 0, 1, 0, 0])  # correct: 0, 1, 4, 5
    correct = update_clean_buffer(buf, _Fixed(), imgs, labels)
    assert correct.tolist() == [True, True, False, False, True, True]
    assert buf.size == 4 and buf.added == 4
    assert (_Fixed()(buf.images[: buf.size]).argmax(1) == torch.tensor([1, 1, 0, 0])).all()
    update_clean_buffer(buf, _Fixed(), imgs, 1 - labels)  # now only 2 and 3 are right
    assert buf.size == 6 and buf.added == 6  # bounded: FIFO, never beyond capacity
    update_clean_buffer(buf, _Fixed(), imgs, torch.full((6,), 5))
    assert buf.added == 6
    state = buf.state_dict()
    other = CleanBuffer(1)
    other.load_state_dict(state)
    assert other.size == 6 and torch.equal(other.images, buf.images)


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_train_checkpoint_resume_evaluate(toy, tmp_path):
    x, y, C = toy
    kw = dict(
        out_dir=tmp_path,
        detector_epochs=1,
        batch_size=32,
        lr=2e-3,
        attack_mix=MIX,
        attack_fns=ATTACKS,
        generator_kwargs=SMALL_G,
        detector_kwargs={"width": 8},
        perceptual="classifier",
        progress=False,
        seed=3,
        guard_size=0,
    )
    r1 = train_gcln(C, (x, y), epochs=1, **kw)
    ck = tmp_path / "gcln.pt"
    assert ck.is_file() and (tmp_path / "train_log.csv").is_file()
    steps = 192 // 32
    assert r1["steps"] == steps
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [e["phase"] for e in hist["epochs"]] == [1, 2]
    assert len(hist["steps"]) == 2 * steps
    lines = (tmp_path / "train_log.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 2 * steps and "loss_g" in lines[0]
    # the on-the-fly clean set only ever holds images that C classifies correctly
    buf = r1["clean_buffer"]
    assert buf.size > 0 and buf.added <= steps * 32
    ci = buf.images[: buf.size]
    assert _accuracy(C, ci, C(ci).argmax(1)) == 1.0
    # resume: continues with epoch 2 only
    r2 = train_gcln(C, (x, y), epochs=2, resume=True, **kw)
    assert r2["steps"] == 2 * steps
    assert [e["epoch"] for e in r2["history"]["epochs"]] == [1, 1, 2]
    assert len(r2["history"]["steps"]) == 3 * steps
    # resume when finished: nothing more is trained
    r3 = train_gcln(C, (x, y), epochs=2, resume=True, **kw)
    assert r3["steps"] == 2 * steps
    # the checkpoint loads with weights_only=True and gives back the same G
    raw = torch.load(ck, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 2 and raw["config"]["generator"]["width"] == 8
    G = load_generator(ck)
    assert not G.training
    probe = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(G(probe), r3["generator"](probe))
    # the defended model keeps clean accuracy (robustness is not claimed on this toy: its class
    # signal is a colour shift, the very direction an attack takes; tests/test_demo.py checks it)
    defended = nn.Sequential(G, C).eval()
    assert _accuracy(defended, x, y) >= _accuracy(C, x, y) - 0.1


def test_resume_refuses_a_different_generator(toy, tmp_path):
    x, y, C = toy
    kw = dict(
        out_dir=tmp_path,
        detector_epochs=0,
        epochs=0,
        batch_size=32,
        attack_mix=MIX,
        attack_fns=ATTACKS,
        perceptual="classifier",
        progress=False,
    )
    train_gcln(C, (x, y), generator_kwargs=SMALL_G, **kw)
    with pytest.raises(ValueError, match="generator"):
        train_gcln(C, (x, y), generator_kwargs={"width": 4, "blocks": 1}, resume=True, **kw)


def test_load_generator_roundtrip(tmp_path):
    from gcln_fast.gcln.train import KIND
    from gcln_fast.utils.checkpoint import atomic_save

    g = Generator(q=7, trainable_q=True, **SMALL_G)
    for p in g.tail.parameters():
        nn.init.normal_(p, std=0.1)
    atomic_save({"kind": KIND, "config": {"generator": g.config}, "generator": g.state_dict()}, tmp_path / "g.pt")
    g2 = load_generator(tmp_path / "g.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(g2(x), g.eval()(x))
    assert abs(float(g2.q.detach()) - 7) < 1e-4
    atomic_save({"kind": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt is not a GCLN checkpoint"):
        load_generator(tmp_path / "bad.pt")


def test_plots_write_png_and_json(toy, tmp_path):
    from gcln_fast.gcln import plots

    x, y, C = toy
    G = Generator(q=10, **SMALL_G).eval()
    hist = {
        "epochs": [{"phase": 1, "epoch": 1, "loss_d": 0.6, "d_acc": 0.6}]
        + [
            {
                "phase": 2,
                "epoch": e,
                "loss_g": 1.0 / e,
                "loss_d": 0.6,
                "loss_p": 0.1,
                "loss_a": 0.7,
                "d_acc": 0.5,
                "acc_recovered": 0.5 + 0.1 * e,
                "acc_clean_through_g": 0.9,
                "acc_attacked_no_defence": 0.1,
            }
            for e in (1, 2)
        ],
        "steps": [{"phase": 1, "step": 1, "loss_d": 0.7}]
        + [{"phase": 2, "step": s, "loss_g": 1.0, "loss_d": 0.6, "loss_p": 0.1, "loss_a": 0.7} for s in (2, 3, 4)],
    }
    out = plots.plot_training(hist, tmp_path)
    assert out["png"].stat().st_size > 0 and json.loads(out["json"].read_text())["epoch"] == [1, 2]
    xs, ys = x[:8], y[:8]
    it = plots.accuracy_vs_iterations({"No defence": None, "GCLN": G}, C, xs, ys, iterations=(1, 3), out_dir=tmp_path)
    assert set(it["accuracy"]) == {"No defence", "GCLN"} and (tmp_path / "accuracy_vs_bpda_iterations.png").is_file()
    # the one-run trace equals separate PGD runs of each length (same start, fixed step)
    t = plots.bpda_pgd_trace(C, xs, ys, iterations=(1, 3), seed=5)
    assert t[3] == plots.bpda_pgd_trace(C, xs, ys, iterations=(3,), seed=5)[3]
    qd = plots.accuracy_vs_q(C, xs, ys, qs=(5, 10), generators={10: G}, iterations=2, out_dir=tmp_path)
    assert qd["q"] == [5.0, 10.0] and qd["gcln_q"] == [10.0] and (tmp_path / "accuracy_vs_q.json").is_file()
    xa = pgd(C, xs, ys)
    with torch.no_grad():
        g = plots.image_grid(xs, xa, G(xa), tmp_path / "grid.png", labels=ys, classifier=C)
    assert g["png"].is_file() and g["json"].is_file()


def test_straight_through_clamp_keeps_the_value_and_passes_the_gradient():
    g = Generator(q=10, **SMALL_G).eval()
    nn.init.constant_(g.tail.bias, 0.6)  # push many pixels past 1
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    plain = g(x)
    (grad_plain,) = torch.autograd.grad(plain.sum(), x)
    g.straight_through_clamp = True
    ste = g(x)
    (grad_ste,) = torch.autograd.grad(ste.sum(), x)
    torch.testing.assert_close(ste, plain)
    assert (plain.detach() == 1).any()
    assert int((grad_plain == 0).sum()) > int((grad_ste == 0).sum())


def test_feature_maps_figure_grad_cam(toy, tmp_path):
    from gcln_fast.gcln.feature_maps import feature_maps_figure, grad_cam

    x, y, C = toy
    xs = x[:2]
    pred, fmap, cam, layer = grad_cam(C, xs)
    assert layer == "c2" and fmap.shape == (2, 16, 16) and cam.shape == (2, 32, 32)  # last spatial activation
    assert float(cam.min()) >= 0 and torch.allclose(cam.flatten(1).amax(1), torch.ones(2))
    assert torch.equal(pred, C(xs).argmax(1))
    noisy = (xs + 0.2 * torch.randn_like(xs)).clamp(0, 1)
    out = feature_maps_figure(C, xs, noisy, xs.clone(), y[:2], tmp_path / "fm.png", class_names=list("abcd"))
    assert out["png"].is_file() and json.loads(out["json"].read_text())["layer"] == "c2"
    assert out["cam_distance_to_clean"]["cleaned by G"] == 0.0  # the same image gives the same heatmap
    assert out["cam_distance_to_clean"]["attacked"] > 0.0
