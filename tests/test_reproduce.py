"""``gcln reproduce`` end to end on a tiny ImageFolder tree (the smoke budget), and its pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gcln_fast.commands.main import main
from gcln_fast.commands.paper_tables import TABLE1, beside_paper


def _folder(root, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(4, per_class // 4))):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] += np.uint8(100 + 10 * c)  # learnable: a colour per class
                Image.fromarray(img).save(d / f"{i}.png")


def test_beside_paper_puts_our_rows_under_the_papers():
    row = {
        "clean": 0.9,
        "oblivious": {"fgsm": 0.5, "pgd": 0.4},
        "adaptive": {"fgsm": 0.3, "pgd": 0.2},
        "transfer": {"pgd": 0.6},
        "worst_case": 0.1,
    }
    table = {"rows": {"GCLN": row}, "meta": {"n": 10, "settings": {"eps": 8 / 255}}}
    md = beside_paper(table, substitute_arch="small_cnn", perceptual="classifier features")
    assert "paper: GCLN paper (Qs = 10) | 91.65% | 75.22% | 86.05%" in md
    assert "ours (adaptive): GCLN | 90.00% | 30.00% | 20.00%" in md
    assert "small_cnn substitute" in md and "classifier features" in md
    assert len(TABLE1) == 3


@pytest.mark.slow
def test_reproduce_smoke_budget_on_a_folder(tmp_path, capsys):
    _folder(tmp_path / "data", per_class=26, seed=0)
    out = tmp_path / "run"
    argv = ["reproduce", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--budget", "smoke"]
    argv += ["--out", str(out), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Table 1" in text and "Table 3" in text and "small_cnn substitute" in text
    for f in ("report.md", "summary.json", "eval/results.json", "plots/feature_maps.png", "eval/eps_curve.png"):
        assert (out / f).is_file(), f
    assert (out / "plots" / "gcln_training_paper.png").is_file()
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert list(rows)[:2] == ["No defence", "QNT alone (q=10)"]
    # resumable per phase: a second run trains nothing and reads the same table
    mtime = (out / "classifier.pt").stat().st_mtime
    assert main(argv) == 0
    assert (out / "classifier.pt").stat().st_mtime == mtime
    assert "exists: skipped" in capsys.readouterr().out
