"""``gcln demo --fast`` end to end: the README's first line, as its smoke profile (slow: minutes)."""

from __future__ import annotations

import json

import pytest

from gcln_fast.commands.main import main


@pytest.mark.slow
def test_demo_fast_profile_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "demo_summary.json").read_text())
    rows = json.loads((out / "eval" / "results.json").read_text())["rows"]
    assert list(rows) == [
        "No defence",
        "QNT alone (q=10)",
        "GCLN paper (oblivious-trained)",
        "GCLN + fine-tuned C",
        "PGD-AT classifier",
    ]
    assert "worst case (headline)" in summary["table"] and "Best GCLN variant" in text
    # the pipeline is real end to end: C learned the data, and the attacks defeat it undefended
    assert rows["No defence"]["clean"] >= 0.6
    assert rows["No defence"]["adaptive"]["pgd"] <= 0.2
    # every row's training cost is reported; the PGD-AT baseline got the fine-tuned variant's budget
    costs = summary["training_seconds"]
    assert costs["PGD-AT classifier"] == pytest.approx(costs["GCLN + fine-tuned C"])
    # the fine-tuned C beside its G, for `gcln eval --row 'NAME=gcln.pt@classifier.pt'`; the paper's G has none
    assert (out / "gcln" / "finetune" / "classifier.pt").is_file()
    assert not (out / "gcln" / "paper" / "classifier.pt").exists()
    for f in ("gcln_training_paper.png", "gcln_training_finetune.png", "cleaning_grid.png"):
        assert (out / "plots" / f).is_file(), f
    table = json.loads((out / "eval" / "results.json").read_text())
    assert (out / "eval" / "eps_curve.png").is_file() and set(table["eps_curve"]) == set(rows)


def test_profile_variant_settings_override_the_common_ones(monkeypatch, tmp_path):
    """``variant_settings`` gives one variant its own settings (``--full-robust``: the fine-tuned pair)."""
    import gcln_fast.gcln as gcln
    from gcln_fast.commands.demo import PROFILES, train_variants

    seen = {}

    def fake_train_gcln(C, data, *, out_dir, epochs, batch_size, **kw):
        seen[out_dir.name] = {"epochs": epochs, "batch_size": batch_size}
        return {"history": {"epochs": []}, "classifier": C}  # C not fine-tuned: nothing to save

    monkeypatch.setattr(gcln, "train_gcln", fake_train_gcln)
    prof = dict(PROFILES["full-robust"], variants=("paper", "finetune"))
    train_variants(tmp_path, prof, None, [0] * 4, [0] * 4, seed=0, progress=False)
    assert seen["paper"] == {"epochs": prof["gcln_epochs"], "batch_size": prof["batch_size"]}
    assert seen["finetune"] == {
        "epochs": prof["gcln_epochs"],
        "batch_size": prof["batch_size"],
        **prof["variant_settings"]["finetune"],
    }
    assert seen["finetune"] != seen["paper"]
