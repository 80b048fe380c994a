"""Shared pipeline helpers: atomic writes, freezing, batched accuracy, checkpoint kinds and verification,
the non-finite guard, resume settings, the output lock."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gcln_fast.utils.checkpoint import atomic_save, load_checkpoint
from gcln_fast.utils.errors import CheckpointError, NonFiniteLossError, OutputLockedError, ResumeMismatchError
from gcln_fast.utils.guards import ensure_finite
from gcln_fast.utils.io import atomic_write_json, atomic_write_text, remove_stale_temps
from gcln_fast.utils.lock import lock_output, lock_path_for
from gcln_fast.utils.metrics import accuracy, batched_correct
from gcln_fast.utils.modules import frozen, in_memory_format
from gcln_fast.utils.resume import HISTORY_KEY, reconcile_resume


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


@pytest.mark.parametrize("start", [torch.contiguous_format, torch.channels_last])
def test_in_memory_format_converts_for_the_body_and_restores_the_callers_layout(start):
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)).to(memory_format=start)
    with in_memory_format(m, torch.channels_last):
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in m)
        assert not any(c.weight.is_contiguous() for c in m)
    assert all(c.weight.is_contiguous(memory_format=start) for c in m)
    with pytest.raises(RuntimeError), in_memory_format(m, torch.contiguous_format):
        raise RuntimeError("boom")
    assert all(c.weight.is_contiguous(memory_format=start) for c in m)


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


# --------------------------------------------------------------------------- checkpoint verification


def _flip_tensor_bytes(path, n: int = 4) -> None:
    """Change ``n`` bytes in the middle of the largest tensor stored in the torch.save archive ``path``."""
    import struct
    import zipfile

    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[start : start + n] = bytes(b ^ 0xFF for b in raw[start : start + n])
    path.write_bytes(bytes(raw))


def test_corrupted_tensor_bytes_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "w.pt"
    atomic_save({"kind": "gcln", "w": torch.randn(4096)}, path)
    _flip_tensor_bytes(path)
    assert torch.load(path, weights_only=True)["kind"] == "gcln"  # torch itself does not notice
    with pytest.raises(CheckpointError, match=r"w\.pt is corrupted: archive member '.*data/\d+' fails its CRC-32"):
        load_checkpoint(path)


def _bad_files(tmp_path):
    good = tmp_path / "good.pt"
    atomic_save({"kind": "classifier", "w": torch.randn(256)}, good)
    files = {
        "empty": (b"", "is empty"),
        "truncated": (good.read_bytes()[:700], "is truncated or damaged"),
        "text": (b"not a checkpoint\n", "is not a checkpoint of this package"),
        "pickle": (b"\x80\x04K\x01.", "legacy torch.save file or a pickle"),
    }
    out = {}
    for name, (data, message) in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
        out[name] = (tmp_path / f"{name}.pt", message)
    torch.save([1, 2], tmp_path / "list.pt")
    out["list"] = (tmp_path / "list.pt", "is not a trained classifier.*: it holds a list")
    atomic_save({"w": 1}, tmp_path / "nokind.pt")
    out["no kind"] = (tmp_path / "nokind.pt", "is not a trained classifier.*: it is a dict of unknown kind")
    out["directory"] = (tmp_path, "is a directory, not a checkpoint file")
    return out


@pytest.mark.parametrize("case", ["empty", "truncated", "text", "pickle", "list", "no kind", "directory"])
def test_bad_checkpoint_files_get_one_clear_message(tmp_path, case):
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path, kind="classifier")
    assert str(path) in str(info.value)


def test_missing_checkpoint_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_accepts_any_of_several_kinds(tmp_path):
    atomic_save({"kind": "classifier_train_state"}, tmp_path / "s.pt")
    assert load_checkpoint(tmp_path / "s.pt", kind=("classifier", "classifier_train_state"))["kind"]


# --------------------------------------------------------------------------- the non-finite guard


def test_ensure_finite_names_the_value_the_step_and_the_checkpoint(tmp_path):
    ensure_finite({"loss": 1.0, "other": None}, step=3)  # finite: nothing happens
    with pytest.raises(NonFiniteLossError, match=r"loss_g = nan at step 7 \(epoch 2\)\. No checkpoint"):
        ensure_finite({"loss_d": 0.5, "loss_g": float("nan")}, step=7, where="epoch 2", checkpoint=tmp_path / "c.pt")
    (tmp_path / "c.pt").write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"loss = inf at step 1\. The last good checkpoint, .*c\.pt"):
        ensure_finite({"loss": torch.tensor(float("inf"))}, step=1, checkpoint=tmp_path / "c.pt")


# --------------------------------------------------------------------------- resume settings


def test_reconcile_resume_refuses_names_forces_and_records():
    saved = {"arch": "a", "train": {"lr": 0.1, "seed": 0, "epochs": 2}, "new_in_this_version": None}
    new = {"arch": "a", "train": {"lr": 0.2, "seed": 1, "epochs": 3}}
    assert reconcile_resume(saved, dict(saved), path="p") == saved
    with pytest.raises(ResumeMismatchError, match=r"train\.lr was 0\.1, now 0\.2; train\.seed was 0, now 1\. "):
        reconcile_resume(saved, new, path="p", may_change=("train.epochs",))
    with pytest.warns(UserWarning, match="changed settings"):
        merged = reconcile_resume(saved, new, path="p", force=True)
    assert merged["train"] == new["train"]
    (record,) = merged[HISTORY_KEY]
    assert record["previous"]["train"]["lr"] == 0.1
    assert record["changed"] == {"train.lr": [0.1, 0.2], "train.seed": [0, 1], "train.epochs": [2, 3]}
    with pytest.warns(UserWarning, match="train.lr was 0.2, now 0.3"):
        again = reconcile_resume(merged, {**new, "train": {**new["train"], "lr": 0.3}}, path="p", force=True)
    assert len(again[HISTORY_KEY]) == 2  # the history is carried over
    with pytest.raises(ResumeMismatchError, match="even with --force"):
        reconcile_resume(saved, {**saved, "arch": "b"}, path="p", force=True, fixed=("arch",))


# --------------------------------------------------------------------------- the output lock


_HOLD = """
import sys, time
from gcln_fast.utils.lock import lock_output
lock = lock_output(sys.argv[1], command="holder-test")
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(target):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_writer_naming_it_and_is_taken_over_after_its_death(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(OutputLockedError, match=rf"in use by process {holder.pid} on .*\(holder-test\)"):
            lock_output(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no cleanup, the lock file stays behind
        holder.wait()
    assert lock_path_for(tmp_path).is_file()
    with lock_output(tmp_path) as lock:
        assert lock.previous["pid"] == holder.pid  # the dead holder's stale lock, taken over
        with pytest.raises(OutputLockedError, match=f"process {os.getpid()}"):
            lock_output(tmp_path)  # also within one process
    assert not lock_path_for(tmp_path).exists()
    with lock_output(tmp_path) as lock:
        assert lock.previous is None  # released cleanly last time


def test_lock_of_a_file_output_lies_beside_it(tmp_path):
    with lock_output(tmp_path / "model.pt") as lock:
        assert lock.path == tmp_path / ".model.pt.lock"
        with pytest.raises(OutputLockedError):
            lock_output(tmp_path / "model.pt")
        lock_output(tmp_path / "other.pt").release()
