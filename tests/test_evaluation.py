"""evaluate / write_report: table schema, the sanity checks (PASS on an undefended model, FLAG on
crafted gradient-masking and collapsed defences), rows with their own classifier, the worst case over
backward surrogates, the eps curve, the suites, the CLI, and determinism for a fixed seed."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gcln_fast import QuantizedDCT
from gcln_fast.attacks import AttackSettings
from gcln_fast.evaluation import (
    KIND,
    Row,
    check_above_chance,
    check_adaptive_vs_oblivious,
    check_adaptive_vs_transfer,
    check_clean_vs_classifier,
    check_eps_response,
    check_eps_sweep,
    check_gradients,
    check_iteration_sweep,
    check_iterative_vs_single_step,
    check_square_vs_gradient,
    check_targeted_vs_untargeted,
    evaluate,
    format_markdown,
    get_suite,
    sanity_lines,
    strip_timing,
    write_report,
)
from gcln_fast.evaluation import runner as evaluation_runner

import helpers as T

# --------------------------------------------------------------------------- crafted defences


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
    n_target_classes=2,
    square_queries=150,
    cw_steps=6,
    eps_sweep=(8 / 255, 64 / 255),
    iter_sweep=(5, 15),
)
CHECKS = [
    "iterative <= single-step (adaptive)",
    "iterative <= single-step (oblivious)",
    "white-box adaptive <= black-box transfer",
    "accuracy -> 0 as eps grows",
    "accuracy does not rise with iterations",
    "gradients through the defended model are non-zero and finite",
    "adaptive <= oblivious",
    "Square (gradient-free) no better than the gradient attacks",
    "targeted APGD-T <= APGD-CE",
    "accuracy moves with eps",
    "clean accuracy near the undefended classifier's",
    "clean accuracy above chance",
]


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
        "zero-grad": T.ZeroGrad(),
        "on-grid-grad": OnGridOnlyGradient(),
        "late-reversal": T.LateReversal(5),
        "collapsed": T.Collapsed(),
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
        adaptive=("fgs", "pgd", "apgd-ce", "apgd-t", "square"),
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
        "adaptive": ["fgsm", "pgd", "apgd-ce", "apgd-t", "square", "cw"],
        "transfer": ["fgsm", "pgd"],
    }
    assert table["labels"]["fgsm"] == "FGS" and table["labels"]["cw"] == "C&W" and table["labels"]["square"] == "Square"
    assert table["min_norm"] == []  # C&W is bounded to the eps-box by default
    assert list(table["rows"]) == ["No defence", "QNT q=10", "zero-grad", "on-grid-grad", "late-reversal", "collapsed"]
    meta = table["meta"]
    assert meta["n"] == 32 and meta["seed"] == 0 and meta["settings"]["eps"] == pytest.approx(8 / 255)
    assert meta["images_per_second"] > 0 and meta["seconds_per_100_images"] > 0
    assert meta["chance"] == pytest.approx(float(torch.bincount(table_labels()).max()) / 32)
    for name, r in table["rows"].items():
        assert set(r) >= {
            "clean",
            "oblivious",
            "adaptive",
            "transfer",
            "adaptive_by_surrogate",
            "worst_case",
            "worst_case_oblivious",
            "worst_case_adaptive",
            "worst_case_transfer",
            "worst_case_gradient",
            "worst_case_gradient_and_square",
            "worst_case_above_chance",
            "classifier",
            "classifier_clean",
            "chance",
            "broken",
            "n",
            "seconds",
            "images_per_second",
        }
        accs = [r["clean"], r["worst_case"], *r["oblivious"].values(), *r["adaptive"].values(), *r["transfer"].values()]
        assert all(0.0 <= a <= 1.0 for a in accs)
        # the headline worst case is never above any single number
        assert r["worst_case"] <= min(accs) + 1e-12
        assert r["worst_case"] <= r["worst_case_oblivious"] and r["worst_case"] <= r["worst_case_adaptive"]
        assert r["worst_case_gradient_and_square"] <= r["worst_case_gradient"]
        assert r["worst_case_above_chance"] == pytest.approx(r["worst_case"] - meta["chance"])
        assert r["classifier"] == "classifier"
        assert [c["check"] for c in table["sanity"][name]] == CHECKS
        assert all(c["status"] in ("PASS", "FLAG", "SKIP") for c in table["sanity"][name])
        assert table["sweeps"][name]["subset"] == 24
    paths = write_report(table, tmp_path / "out")
    assert "eps_curve" not in paths  # no eps curve was asked for
    loaded = json.loads(paths["json"].read_text())
    assert loaded == json.loads(json.dumps(table))
    md = paths["markdown"].read_text()
    assert "Worst case (headline)" in md and "adaptive" in md and "Black-box" in md
    assert "(adaptive " in md  # every oblivious number beside its adaptive number
    assert "Square (150 queries" in md and "APGD-T (2 target classes x 6 its)" in md  # budgets in the header
    for line in sanity_lines(table):
        assert line in md
    assert md == format_markdown(table)


def table_labels():
    return T.trained(0)[2][:32]


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
    # Square needs no gradient: it breaks what every gradient attack left standing
    assert s["Square (gradient-free) no better than the gradient attacks"] == "FLAG"
    r = table["rows"]["zero-grad"]
    assert r["adaptive"]["square"] <= r["worst_case_gradient"] - 0.2
    # the headline worst case is not fooled by the masking: the oblivious attacks still break it
    assert r["worst_case"] <= 0.05 < r["worst_case_gradient"]
    assert r["broken"] == []  # masking, not a broken model


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


def test_collapsed_defence_is_flagged_as_broken(table):
    """A cleaning network that sends every image to one grey image: its clean accuracy equals its
    "robust" accuracy, which must read as broken (against chance), never as robust."""
    s = _status(table, "collapsed")
    for check in (
        "clean accuracy near the undefended classifier's",
        "clean accuracy above chance",
        "accuracy moves with eps",
    ):
        assert s[check] == "FLAG", table["sanity"]["collapsed"]
    r = table["rows"]["collapsed"]
    assert r["worst_case"] == r["clean"] and len(r["broken"]) == 3
    assert r["worst_case_above_chance"] <= 0.0
    md = format_markdown(table)
    line = next(x for x in md.splitlines() if x.startswith("| collapsed |"))
    assert "BROKEN" in line and "pts" in line and "chance" in line
    for name in ("No defence", "QNT q=10", "zero-grad", "on-grid-grad", "late-reversal"):
        assert table["rows"][name]["broken"] == [], name


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


def test_models_run_channels_last_and_come_back_in_their_layout(models):
    model, _, x, y = models  # channels-last: the layout preferred_memory_format picks (bench/bench_memory_format.py)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    hook = conv.register_forward_pre_hook(lambda m, inp: seen.append(m.weight.is_contiguous()))
    try:
        evaluate({"No defence": nn.Identity()}, model, None, x[:8], y[:8], settings=SETTINGS, oblivious=("fgs",),
                 adaptive=("fgs",), sanity=False, progress=False)  # fmt: skip
    finally:
        hook.remove()
    assert seen and not any(seen)  # every forward saw channels-last weights
    assert all(p.is_contiguous() for p in model.parameters())


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
    with pytest.raises(TypeError, match="no classifier"):
        evaluate({"n": nn.Identity()}, None, None, x, y)
    with pytest.raises(TypeError, match="classifier of row"):
        evaluate({"n": Row(nn.Identity(), "model.pt")}, model, None, x, y)
    with pytest.raises(ValueError, match="eps_curve"):
        evaluate({"n": nn.Identity()}, model, None, x, y, eps_curve=[8.0])
    with pytest.raises(ValueError, match="valid suites"):
        evaluate({"n": nn.Identity()}, model, None, x, y, suite="autoattack")


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
    assert check_square_vs_gradient(0.40, 0.39, gap=0.03)["status"] == "PASS"
    assert check_square_vs_gradient(0.40, 0.20, gap=0.03)["status"] == "FLAG"
    assert check_square_vs_gradient(None, None)["status"] == "SKIP"
    assert check_targeted_vs_untargeted(0.30, 0.35)["status"] == "PASS"
    assert check_targeted_vs_untargeted(0.45, 0.35)["status"] == "FLAG"
    assert check_targeted_vs_untargeted(None, 0.35)["status"] == "SKIP"
    # issue 11's collapsed G: clean 13.0% beside the classifier's 93.0%, 9.38% at every eps
    assert check_clean_vs_classifier(0.13, 0.93)["status"] == "FLAG"
    assert check_clean_vs_classifier(0.91, 0.93)["status"] == "PASS"
    assert check_above_chance(0.13, 0.11)["status"] == "FLAG"
    assert check_above_chance(0.91, 0.11)["status"] == "PASS"
    assert check_eps_response(0.0938, [8 / 255, 64 / 255], [0.0938, 0.0938])["status"] == "FLAG"
    assert check_eps_response(0.95, [8 / 255, 64 / 255], [0.40, 0.0])["status"] == "PASS"
    assert check_eps_response(None, [], [])["status"] == "SKIP"


# --------------------------------------------------------------------------- rows, surrogates, eps curve, suites


def test_rows_with_their_own_classifier(models, monkeypatch):
    """Oblivious sets are crafted once per distinct classifier, on that classifier alone; a row's clean
    accuracy is judged against its own classifier's."""
    model, substitute, x, y = models
    crafted = []
    real = evaluation_runner.craft_all

    def recording(attack, m, *args, **kw):
        crafted.append((kw["desc"], m))
        return real(attack, m, *args, **kw)

    monkeypatch.setattr(evaluation_runner, "craft_all", recording)
    untrained = T.small_cnn(5).eval()
    t = evaluate(
        {
            "No defence": nn.Identity(),
            "QNT q=10": QuantizedDCT(10),
            "own": Row(nn.Identity(), substitute),
            "pair": (QuantizedDCT(10), substitute),
            "untrained": Row(nn.Identity(), untrained),
        },
        model,
        None,
        x[:16],
        y[:16],
        settings=SETTINGS,
        oblivious=("pgd",),
        adaptive=("pgd",),
        sanity=False,
        progress=False,
    )
    oblivious = [(d, m) for d, m in crafted if d.startswith("oblivious")]
    assert [m for _, m in oblivious] == [model, substitute, untrained]  # one set per distinct classifier
    rows = t["rows"]
    assert rows["own"]["classifier"] == rows["pair"]["classifier"] == "classifier of 'own'"
    assert rows["own"]["oblivious"]["pgd"] <= 0.1, "crafted on the row's own classifier"
    assert rows["own"]["classifier_clean"] == rows["own"]["clean"]
    s = _status(t, "untrained")
    assert s["clean accuracy near the undefended classifier's"] == "PASS"  # judged against itself
    assert s["clean accuracy above chance"] == "FLAG" and rows["untrained"]["broken"]
    assert "Classifier" in format_markdown(t)  # the table names each row's classifier


def test_worst_case_over_backward_surrogates(models):
    """A QNT-like layer whose BPDA (identity) backward carries no signal but whose cubic one does: the
    identity-only attack fails, the worst case over both surrogates breaks it; the layer is restored."""
    model, _, x, y = models
    layer, clamp = T.FakeSurrogateLayer("sine"), T.FakeClamp()
    defence = nn.Sequential(layer, clamp)
    kw = dict(oblivious=(), adaptive=("pgd", "square"), sanity=False, progress=False)
    only = evaluate({"d": defence}, model, None, x[:16], y[:16], settings=SETTINGS.replace(square_queries=5), **kw)
    both = evaluate(
        {"d": defence},
        model,
        None,
        x[:16],
        y[:16],
        settings=SETTINGS.replace(square_queries=5, surrogates=("identity", "cubic")),
        **kw,
    )
    assert only["rows"]["d"]["adaptive"]["pgd"] >= 0.8 and only["rows"]["d"]["adaptive_by_surrogate"] == {}
    by = both["rows"]["d"]["adaptive_by_surrogate"]
    assert set(by) == {"identity", "cubic"} and "square" not in by["cubic"]  # Square runs once, without one
    assert by["identity"]["pgd"] >= 0.8 and by["cubic"]["pgd"] <= 0.1
    assert both["rows"]["d"]["adaptive"]["pgd"] <= by["cubic"]["pgd"]
    assert layer.surrogate == "sine" and clamp.straight_through_clamp is False
    assert set(layer.seen) == {"identity", "cubic"} and True in clamp.seen
    md = format_markdown(both)
    assert "Per backward surrogate" in md and "identity, cubic" in md


def test_real_qnt_layer_runs_every_surrogate(models):
    model, _, x, y = models
    layer = QuantizedDCT(10)
    t = evaluate(
        {"QNT q=10": layer},
        model,
        None,
        x[:8],
        y[:8],
        settings=SETTINGS.replace(surrogates=("identity", "cubic")),
        oblivious=(),
        adaptive=("fgsm", "pgd"),
        sanity=False,
        progress=False,
    )
    r = t["rows"]["QNT q=10"]
    assert set(r["adaptive_by_surrogate"]) == {"identity", "cubic"} and layer.surrogate == "identity"
    for a in ("fgsm", "pgd"):
        assert r["adaptive"][a] <= min(acc[a] for acc in r["adaptive_by_surrogate"].values())


def test_eps_curve(models, tmp_path):
    model, _, x, y = models
    t = evaluate(
        {"No defence": nn.Identity(), "QNT q=10": QuantizedDCT(10)},
        model,
        None,
        x[:16],
        y[:16],
        settings=SETTINGS,
        oblivious=("fgs",),
        adaptive=("fgs",),
        sanity=False,
        eps_curve=[1 / 255, 4 / 255, 16 / 255],
        eps_curve_subset=12,
        progress=False,
    )
    for name, c in t["eps_curve"].items():
        assert c["attack"] == "apgd-ce" and c["subset"] == 12 and len(c["accuracy"]) == 3
        assert c["clean"] >= c["accuracy"][0] >= c["accuracy"][1] >= c["accuracy"][2], (name, c)
        assert c["accuracy"][2] <= 0.1 < c["accuracy"][0]
    paths = write_report(t, tmp_path)
    assert paths["eps_curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Accuracy vs eps (adaptive APGD-CE, first 12 images" in paths["markdown"].read_text()


def test_min_norm_cw_stays_out_of_the_worst_case(models):
    model, _, x, y = models
    t = evaluate(
        {"No defence": nn.Identity()},
        model,
        None,
        x[:8],
        y[:8],
        settings=SETTINGS.replace(cw_linf_bound=False, cw_steps=20, cw_search_steps=1, cw_c=10.0),
        oblivious=("cw",),
        adaptive=("cw",),
        sanity=False,
        progress=False,
    )
    r = t["rows"]["No defence"]
    assert t["min_norm"] == ["cw"] and r["adaptive"]["cw"] <= 0.25
    assert r["worst_case"] == r["clean"]  # nothing else was run
    assert "minimum-norm" in format_markdown(t)


def test_suites():
    gpu, cpu = get_suite("standard", budget="gpu"), get_suite("standard", budget="cpu")
    s = gpu.settings  # AutoAttack "standard" budgets
    assert (s.apgd_steps, s.n_target_classes, s.square_queries, s.steps) == (100, 9, 5000, 100)
    assert s.eps == pytest.approx(8 / 255) and s.step == pytest.approx(2 / 255)  # PGD-100, step eps/4
    assert s.surrogates == ("identity", "cubic") and cpu.settings.surrogates == ("identity",)
    assert {"apgd-ce", "apgd-t", "square", "pgd"} <= set(gpu.adaptive)
    assert get_suite("standard", eps=16 / 255).settings.step == pytest.approx(4 / 255)
    assert get_suite("paper", dataset="cifar10").settings.steps == 10
    assert get_suite("paper", dataset="svhn").settings.eps == pytest.approx(12 / 255)
    with pytest.raises(ValueError, match="valid budgets"):
        get_suite("standard", budget="tpu")
    model, x, y = T.trained(0)
    t = evaluate({"No defence": nn.Identity()}, model, None, x[:8], y[:8], suite="quick", sanity=False, progress=False)
    assert t["meta"]["suite"] == "quick" and t["columns"]["adaptive"][:3] == ["apgd-ce", "apgd-t", "square"]
    assert format_markdown(t).count("Suite **quick**") == 1


# --------------------------------------------------------------------------- the CLI


def _cli_args(argv, classifier):
    import argparse

    from gcln_fast.commands.evaluate import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"), "eval")
    return parser.parse_args(["eval", "--classifier", str(classifier), "--out", "o", *argv])


def test_cli_suites_and_budgets(tmp_path):
    from gcln_fast import models as models_mod
    from gcln_fast.commands.evaluate import suite_from_args

    clf = tmp_path / "c.pt"  # --classifier is checked when the flags are parsed
    models_mod.save_classifier(models_mod.build_classifier("small_cnn", 10), clf, arch="small_cnn", num_classes=10)

    def args_of(argv):
        return _cli_args(argv, clf)

    s = suite_from_args(args_of([]))  # default: the standard suite, CPU budget
    assert s.name == "standard" and s.budget == "cpu" and s.settings.eps == pytest.approx(8 / 255)
    s = suite_from_args(args_of(["--device", "cuda", "--square-queries", "700", "--apgd-steps", "30"]))
    assert s.budget == "gpu" and s.settings.square_queries == 700 and s.settings.apgd_steps == 30
    assert s.settings.surrogates == ("identity", "cubic")
    s = suite_from_args(args_of(["--preset", "cifar10"]))  # the old preset names keep working
    assert s.name == "paper" and s.settings.step == pytest.approx(1 / 255) and s.settings.steps == 10
    s = suite_from_args(args_of(["--suite", "paper", "--dataset", "svhn", "--eps", "8"]))
    assert s.settings.eps == pytest.approx(8 / 255) and s.settings.step == pytest.approx(3 / 255)
    s = suite_from_args(args_of(["--eps", "12", "--surrogates", "identity", "sine"]))
    assert s.settings.step == pytest.approx(3 / 255) and s.settings.surrogates == ("identity", "sine")


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    from gcln_fast import gcln as gcln_mod
    from gcln_fast import models as models_mod
    from gcln_fast.commands.main import main

    for name in ("clf", "sub"):
        torch.manual_seed(len(name))
        models_mod.save_classifier(
            models_mod.build_classifier("small_cnn", 10), tmp_path / f"{name}.pt", arch="small_cnn", num_classes=10
        )
    # a stand-in generator: the CLI must load every GCLN checkpoint through gcln_fast.gcln.load_generator
    loaded = []
    monkeypatch.setattr(
        gcln_mod, "load_generator", lambda path, map_location="cpu": loaded.append(str(path)) or QuantizedDCT(5)
    )
    out = tmp_path / "out"
    argv = ["eval", "--classifier", str(tmp_path / "clf.pt"), "--substitute", str(tmp_path / "sub.pt")]
    argv += ["--dataset", "embedded", "--data-root", str(tmp_path / "data"), "--n", "8", "--batch-size", "8"]
    argv += ["--gcln", str(tmp_path / "g.pt"), "--gcln", str(tmp_path / "paper" / "gcln.pt"), "--qnt-steps", "10"]
    argv += ["--row", f"own=none@{tmp_path / 'sub.pt'}"]
    argv += ["--jpeg", "50"]
    argv += ["--row", f"GCLN + C=g2.pt@{tmp_path / 'clf.pt'}", "--out", str(out), "--seed", "1"]
    argv += ["--suite", "quick", "--steps", "2", "--apgd-steps", "2", "--square-queries", "3"]
    argv += ["--oblivious", "fgsm", "pgd", "--adaptive", "fgsm", "pgd", "square", "--transfer", "pgd"]
    argv += ["--iter-sweep", "1", "2", "--eps-sweep", "8", "64", "--sanity-subset", "4"]
    argv += ["--eps-curve", "4", "8", "--eps-curve-subset", "4", "--threads", "2", "--no-progress"]
    assert main(argv) == 0
    assert loaded == [str(tmp_path / "g.pt"), str(tmp_path / "paper" / "gcln.pt"), "g2.pt"]
    table = json.loads((out / "results.json").read_text())
    assert list(table["rows"]) == ["No defence", "QNT q=10", "JPEG Q50", "GCLN g", "GCLN paper", "own", "GCLN + C"]
    assert table["rows"]["own"]["classifier"] == "classifier of 'own'"
    assert table["rows"]["GCLN + C"]["classifier"] == "classifier of 'GCLN + C'"  # a separately loaded copy
    meta = table["meta"]
    assert meta["dataset"] == "embedded" and meta["n"] == 8 and meta["suite"] == "quick"
    assert meta["settings"]["steps"] == 2 and meta["settings"]["iter_sweep"] == [1, 2]
    assert table["eps_curve"]["own"]["eps"] == pytest.approx([4 / 255, 8 / 255])
    assert (out / "eps_curve.png").is_file() and (out / "results.md").read_text().startswith("# Robustness evaluation")
    captured = capsys.readouterr()
    assert "Worst case (headline)" in captured.out and ("[PASS]" in captured.out or "[FLAG]" in captured.out)
    assert "s per 100 images" in captured.err
