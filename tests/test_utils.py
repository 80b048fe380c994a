"""Shared pipeline helpers: atomic writes, freezing, batched accuracy, checkpoint kinds."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gcln_fast.utils.checkpoint import atomic_save, load_checkpoint
from gcln_fast.utils.io import atomic_write_json, atomic_write_text, remove_stale_temps
from gcln_fast.utils.metrics import accuracy, batched_correct
from gcln_fast.utils.modules import frozen


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_stale_temporary_of_a_killed_writer_is_removed(tmp_path):
    target = tmp_path / "log.csv"
    stale = tmp_path / f".log.csv.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".log.csv.{os.getppid()}.def456.tmp"  # a writer that is still running
    stale.write_text("half")
    live.write_text("busy")
    atomic_write_text(target, "x")
    assert not stale.exists() and live.exists()
    assert remove_stale_temps(target) == 0


def test_temporary_names_differ_between_writers(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "f", "1")
    atomic_write_text(tmp_path / "f", "2")
    assert len(set(seen)) == 2 and all(f".f.{os.getpid()}." in s for s in seen)


def test_frozen_restores_flags_also_when_the_body_raises():
    m = nn.Linear(2, 2)
    m.bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(m):
        assert not any(p.requires_grad for p in m.parameters())
        raise RuntimeError("boom")
    assert m.weight.requires_grad and not m.bias.requires_grad


def test_batched_accuracy_matches_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(37, 3, 2, 2), torch.randint(0, 3, (37,))
    ok = batched_correct(model, x, y, batch_size=5)
    with torch.no_grad():
        expected = model(x).argmax(1) == y
    assert torch.equal(ok, expected)
    assert accuracy(model, x, y, batch_size=8) == pytest.approx(float(expected.float().mean()))


def test_load_checkpoint_refuses_the_wrong_kind(tmp_path):
    atomic_save({"kind": "gcln", "x": 1}, tmp_path / "g.pt")
    assert load_checkpoint(tmp_path / "g.pt", kind="gcln")["x"] == 1
    with pytest.raises(ValueError, match="g.pt is not a trained classifier.*: it is a GCLN checkpoint"):
        load_checkpoint(tmp_path / "g.pt", kind="classifier")
