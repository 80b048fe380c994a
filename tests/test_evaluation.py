"""evaluate / write_report: table schema, the sanity checks (PASS on an undefended model, FLAG on
crafted gradient-masking defences), and determinism for a fixed seed."""

from __future__ import annotations

import json

import _attack_toys as T
import pytest
import torch
from torch import nn

from gcln_fast import QuantizedDCT
from gcln_fast.attacks import AttackSettings
from gcln_fast.evaluation import (
    KIND,
    check_adaptive_vs_oblivious,
    check_adaptive_vs_transfer,
    check_eps_sweep,
    check_gradients,
    check_iteration_sweep,
    check_iterative_vs_single_step,
    evaluate,
    format_markdown,
    sanity_lines,
    strip_timing,
    write_report,
)

# --------------------------------------------------------------------------- crafted defences


class _ZeroGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class ZeroGrad(nn.Module):
    """Forward is the identity, backward returns zeros: the textbook masked gradient."""

    def forward(self, x):
        return _ZeroGradFn.apply(x)


class _OnGridFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        u = x * 255
        ctx.save_for_backward(((u - u.round()).abs() < 1e-3).flatten(1).all(1))
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        (on_grid,) = ctx.saved_tensors
        return g * on_grid[:, None, None, None]


class OnGridOnlyGradient(nn.Module):
    """True gradients on the 8-bit grid (where clean images and FGS start), zero off it (where PGD's
    random start lands): a defence whose gradients are only informative at the data points."""

    def forward(self, x):
        return _OnGridFn.apply(x)


class LateReversal(nn.Module):
    """Honest gradients for the first ``k`` backward passes of an attack, reversed afterwards (the
    count restarts at every no-grad forward, i.e. every evaluation): long attacks undo themselves."""

    def __init__(self, k=10):
        super().__init__()
        self.k, self.calls = k, 0
        module = self

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.clone()

            @staticmethod
            def backward(ctx, g):
                module.calls += 1
                return g if module.calls <= module.k else -g

        self.fn = Fn

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.calls = 0
        return self.fn.apply(x)


class RandomMask(nn.Module):
    """Randomly replaces 10% of the pixels by grey (a randomised defence, global RNG)."""

    def forward(self, x):
        keep = (torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) > 0.1).to(x.dtype)
        return x * keep + 0.5 * (1 - keep)


SETTINGS = AttackSettings(
    eps=8 / 255,
    step=2 / 255,
    steps=5,
    apgd_steps=6,
    cw_steps=6,
    cw_lr=0.02,
    eps_sweep=(8 / 255, 64 / 255),
    iter_sweep=(5, 15),
)


@pytest.fixture(scope="module")
def models():
    model, x, y = T.trained(0)
    substitute, _, _ = T.trained(1)
    return model, substitute, x[:32], y[:32]


@pytest.fixture(scope="module")
def table(models):
    model, substitute, x, y = models
    defences = {
        "No defence": nn.Identity(),
        "QNT q=10": QuantizedDCT(10),
        "zero-grad": ZeroGrad(),
        "on-grid-grad": OnGridOnlyGradient(),
        "late-reversal": LateReversal(5),
    }
    return evaluate(
        defences,
        model,
        substitute,
        x,
        y,
        settings=SETTINGS,
        batch_size=64,
        seed=0,
        oblivious=("fgs", "pgd", "cw"),
        adaptive=("fgs", "pgd", "apgd-ce", "apgd-dlr"),
        transfer=("fgs", "pgd"),
        sanity_subset=24,
        progress=False,
    )


def _status(table, row):
    return {c["check"]: c["status"] for c in table["sanity"][row]}


# --------------------------------------------------------------------------- schema and report


def test_table_schema(table, tmp_path):
    assert table["kind"] == KIND
    # Oblivious C&W is not asked for adaptively, but every defended number gets its adaptive twin.
    assert table["columns"] == {
        "oblivious": ["fgsm", "pgd", "cw"],
        "adaptive": ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "cw"],
        "transfer": ["fgsm", "pgd"],
    }
    assert table["labels"]["fgsm"] == "FGS" and table["labels"]["cw"] == "C&W"
    assert list(table["rows"]) == ["No defence", "QNT q=10", "zero-grad", "on-grid-grad", "late-reversal"]
    meta = table["meta"]
    assert meta["n"] == 32 and meta["seed"] == 0 and meta["settings"]["eps"] == pytest.approx(8 / 255)
    assert meta["images_per_second"] > 0
    for name, r in table["rows"].items():
        assert set(r) >= {
            "clean",
            "oblivious",
            "adaptive",
            "transfer",
            "worst_case",
            "worst_case_oblivious",
            "worst_case_adaptive",
            "worst_case_transfer",
            "n",
            "seconds",
            "images_per_second",
        }
        accs = [r["clean"], r["worst_case"], *r["oblivious"].values(), *r["adaptive"].values(), *r["transfer"].values()]
        assert all(0.0 <= a <= 1.0 for a in accs)
        # the headline worst case is never above any single number
        assert r["worst_case"] <= min(accs) + 1e-12
        assert r["worst_case"] <= r["worst_case_oblivious"] and r["worst_case"] <= r["worst_case_adaptive"]
        assert [c["check"] for c in table["sanity"][name]] == [
            "iterative <= single-step (adaptive)",
            "iterative <= single-step (oblivious)",
            "white-box adaptive <= black-box transfer",
            "accuracy -> 0 as eps grows",
            "accuracy does not rise with iterations",
            "gradients through the defended model are non-zero and finite",
            "adaptive <= oblivious",
        ]
        assert all(c["status"] in ("PASS", "FLAG", "SKIP") for c in table["sanity"][name])
        assert table["sweeps"][name]["subset"] == 24
    paths = write_report(table, tmp_path / "out")
    loaded = json.loads(paths["json"].read_text())
    assert loaded == json.loads(json.dumps(table))
    md = paths["markdown"].read_text()
    assert "Worst case (headline)" in md and "adaptive" in md and "Black-box" in md
    assert "(adaptive " in md  # every oblivious number beside its adaptive number
    for line in sanity_lines(table):
        assert line in md
    assert md == format_markdown(table)


def test_undefended_model_passes_every_check(table):
    statuses = _status(table, "No defence")
    assert set(statuses.values()) == {"PASS"}, table["sanity"]["No defence"]
    r = table["rows"]["No defence"]
    assert r["clean"] >= 0.9 and r["worst_case"] <= 0.05
    assert r["adaptive"]["pgd"] == r["oblivious"]["pgd"]  # no defence: adaptive is oblivious


def test_zero_gradient_defence_is_flagged(table):
    s = _status(table, "zero-grad")
    assert s["gradients through the defended model are non-zero and finite"] == "FLAG"
    assert s["adaptive <= oblivious"] == "FLAG"
    assert s["white-box adaptive <= black-box transfer"] == "FLAG"
    assert s["accuracy -> 0 as eps grows"] == "FLAG"
    r = table["rows"]["zero-grad"]
    # the headline worst case is not fooled by the masking: the oblivious attacks still break it
    assert r["worst_case"] <= 0.05 < r["worst_case_adaptive"]


def test_on_grid_gradient_defence_flags_single_step_beating_pgd(table):
    s = _status(table, "on-grid-grad")
    assert s["iterative <= single-step (adaptive)"] == "FLAG"
    r = table["rows"]["on-grid-grad"]
    assert r["adaptive"]["pgd"] > r["adaptive"]["fgsm"]


def test_late_reversal_defence_flags_the_iteration_sweep(table):
    s = _status(table, "late-reversal")
    assert s["accuracy does not rise with iterations"] == "FLAG"
    acc = table["sweeps"]["late-reversal"]["iterations"]["accuracy"]
    assert acc[1] > acc[0]


def test_qnt_alone_gradients_flow(table):
    s = _status(table, "QNT q=10")
    assert s["gradients through the defended model are non-zero and finite"] == "PASS"
    assert table["rows"]["QNT q=10"]["adaptive"]["pgd"] <= 0.1  # BPDA breaks QNT alone


def test_no_substitute_skips_transfer(models):
    model, _, x, y = models
    t = evaluate(
        {"No defence": nn.Identity()},
        model,
        None,
        x[:8],
        y[:8],
        settings=SETTINGS.replace(iter_sweep=(2,), eps_sweep=(8 / 255,)),
        oblivious=("fgs",),
        adaptive=("fgs",),
        sanity_subset=8,
        progress=False,
    )
    assert t["columns"]["transfer"] == [] and t["rows"]["No defence"]["worst_case_transfer"] is None
    assert _status(t, "No defence")["white-box adaptive <= black-box transfer"] == "SKIP"
    assert "Not run (no substitute model given)" in format_markdown(t)


def test_deterministic_for_a_fixed_seed(models):
    model, substitute, x, y = models
    small = SETTINGS.replace(steps=3, iter_sweep=(2, 4), eps_sweep=(8 / 255, 32 / 255))
    kw = dict(
        settings=small,
        batch_size=8,
        oblivious=("pgd",),
        adaptive=("pgd",),
        transfer=("pgd",),
        sanity_subset=8,
        progress=False,
    )
    defences = lambda: {"random mask": RandomMask(), "QNT q=10": QuantizedDCT(10)}  # noqa: E731
    a = evaluate(defences(), model, substitute, x[:16], y[:16], seed=3, **kw)
    torch.manual_seed(12345)  # the global RNG state before the call must not matter
    b = evaluate(defences(), model, substitute, x[:16], y[:16], seed=3, **kw)
    assert strip_timing(a) == strip_timing(b)


def test_bad_arguments(models):
    model, _, x, y = models
    with pytest.raises(ValueError, match="non-empty dict"):
        evaluate({}, model, None, x, y)
    with pytest.raises(TypeError, match="nn.Module"):
        evaluate({"x": lambda v: v}, model, None, x, y)
    with pytest.raises(ValueError, match="valid attacks"):
        evaluate({"n": nn.Identity()}, model, None, x, y, oblivious=("deepfool",))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate({"n": nn.Identity()}, model, None, x, y, batch_size=0)


# --------------------------------------------------------------------------- the checks as pure functions


def test_checks_on_crafted_numbers():
    assert check_iterative_vs_single_step(0.1, 0.3)["status"] == "PASS"
    assert check_iterative_vs_single_step(0.86, 0.75)["status"] == "FLAG"  # the paper's Table 1 GCLN row
    assert check_iterative_vs_single_step(None, 0.3)["status"] == "SKIP"
    assert check_adaptive_vs_transfer({"pgd": 0.1}, {"pgd": 0.4})["status"] == "PASS"
    assert check_adaptive_vs_transfer({"pgd": 0.9339}, {"pgd": 0.8715})["status"] == "FLAG"  # the paper's Table 4
    assert check_adaptive_vs_transfer({"pgd": 0.1}, {})["status"] == "SKIP"
    assert check_eps_sweep([8 / 255, 16 / 255, 64 / 255], [0.3, 0.1, 0.0])["status"] == "PASS"
    assert check_eps_sweep([8 / 255, 16 / 255, 64 / 255], [0.3, 0.4, 0.0])["status"] == "FLAG"  # rises
    assert check_eps_sweep([8 / 255, 64 / 255], [0.5, 0.45])["status"] == "FLAG"  # does not reach ~0
    assert check_iteration_sweep([10, 20, 50, 100], [0.5, 0.4, 0.4, 0.39])["status"] == "PASS"
    assert check_iteration_sweep([10, 20, 50, 100], [0.5, 0.55, 0.6, 0.6])["status"] == "FLAG"
    assert check_gradients(True, 0.0, 1e-3)["status"] == "PASS"
    assert check_gradients(False, 0.0, 1e-3)["status"] == "FLAG"
    assert check_gradients(True, 0.5, 1e-3)["status"] == "FLAG"
    assert check_adaptive_vs_oblivious({"pgd": 0.1, "fgsm": 0.2}, {"pgd": 0.5, "fgsm": 0.6})["status"] == "PASS"
    assert check_adaptive_vs_oblivious({"pgd": 0.7}, {"pgd": 0.5})["status"] == "FLAG"
    assert (
        check_adaptive_vs_oblivious({"pgd": 0.1}, {"pgd": 0.1}, worst_adaptive=0.3, worst_oblivious=0.1)["status"]
        == "FLAG"
    )
    # within tolerance is not a finding
    assert check_iterative_vs_single_step(0.305, 0.3, tol=0.01)["status"] == "PASS"


# --------------------------------------------------------------------------- the CLI


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    models_mod = pytest.importorskip("gcln_fast.models")
    pytest.importorskip("gcln_fast.data")
    gcln_mod = pytest.importorskip("gcln_fast.gcln")
    from gcln_fast.commands.main import main

    for name in ("clf", "sub"):
        torch.manual_seed(len(name))
        models_mod.save_classifier(
            models_mod.build_classifier("small_cnn", 10), tmp_path / f"{name}.pt", arch="small_cnn", num_classes=10
        )
    # a stand-in generator: the CLI must load every --gcln checkpoint through gcln_fast.gcln.load_generator
    loaded = []
    monkeypatch.setattr(
        gcln_mod, "load_generator", lambda path, map_location="cpu": loaded.append(str(path)) or QuantizedDCT(5)
    )
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--classifier",
            str(tmp_path / "clf.pt"),
            "--substitute",
            str(tmp_path / "sub.pt"),
            "--dataset",
            "embedded",
            "--data-root",
            str(tmp_path / "data"),
            "--n",
            "8",
            "--batch-size",
            "8",
            "--gcln",
            str(tmp_path / "g.pt"),
            "--qnt-steps",
            "10",
            "--out",
            str(out),
            "--seed",
            "1",
            "--device",
            "cpu",
            "--preset",
            "cifar10",
            "--steps",
            "2",
            "--apgd-steps",
            "2",
            "--cw-steps",
            "2",
            "--oblivious",
            "fgsm",
            "pgd",
            "--adaptive",
            "fgsm",
            "pgd",
            "--transfer",
            "pgd",
            "--iter-sweep",
            "1",
            "2",
            "--eps-sweep",
            "8",
            "64",
            "--sanity-subset",
            "4",
            "--threads",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0 and loaded == [str(tmp_path / "g.pt")]
    table = json.loads((out / "results.json").read_text())
    assert list(table["rows"]) == ["No defence", "QNT q=10", "GCLN g"]
    assert table["meta"]["dataset"] == "embedded" and table["meta"]["n"] == 8
    assert table["meta"]["settings"]["steps"] == 2 and table["meta"]["settings"]["iter_sweep"] == [1, 2]
    printed = capsys.readouterr().out
    assert "Worst case (headline)" in printed and ("[PASS]" in printed or "[FLAG]" in printed)
    assert (out / "results.md").read_text().startswith("# Robustness evaluation")
