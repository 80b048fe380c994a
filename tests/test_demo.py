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
    for f in ("gcln_training_paper.png", "gcln_training_finetune.png", "cleaning_grid.png"):
        assert (out / "plots" / f).is_file(), f
    table = json.loads((out / "eval" / "results.json").read_text())
    assert (out / "eval" / "eps_curve.png").is_file() and set(table["eps_curve"]) == set(rows)
