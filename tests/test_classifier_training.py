"""Classifier training: learns, checkpoints atomically every epoch, resumes."""

import json

import pytest
import torch

from gcln_fast.data import get_dataset
from gcln_fast.models import build_classifier, load_classifier
from gcln_fast.training.classifier import STATE_KIND, augment_batch, train_classifier


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="module")
def data(root):
    """A small set for the mechanics (checkpointing, resuming)."""
    return get_dataset("embedded", "train", root=root, size=300), get_dataset("embedded", "test", root=root, size=100)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest on a loaded 2-core machine
    yield
    torch.set_num_threads(n)


def _train(data, path, **kw):
    torch.manual_seed(0)
    model = build_classifier("small_cnn")
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 64)
    kw.setdefault("lr", 0.05)
    hist = train_classifier(model, data[0], data[1], checkpoint_path=path, progress=False, **kw)
    return model, hist


def test_learns_and_writes_files(root, tmp_path):
    # SVHN-like data has a slow start (a plateau near chance for the first ~100 steps);
    # 2000 images x 3 epochs at batch 32 (~190 steps) leaves chance clearly behind.
    data = get_dataset("embedded", "train", root=root, size=2000), get_dataset("embedded", "test", root=root, size=400)
    model, hist = _train(
        data,
        tmp_path / "clf.state.pt",
        final_path=tmp_path / "clf.pt",
        epochs=3,
        batch_size=32,
        lr=0.003,
        optimizer="adamw",
    )
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2, 3]
    assert hist["final_val_acc"] > 0.2  # chance is 0.1; 0.2 is > 6 sigma above it on 400 images
    assert hist["epochs"][-1]["train_loss"] < hist["epochs"][0]["train_loss"]
    state = torch.load(tmp_path / "clf.state.pt", weights_only=True)
    assert state["kind"] == STATE_KIND and state["epoch"] == 3
    assert {"optimizer", "step", "seconds", "rng", "history", "state_dict"} <= set(state)
    final = load_classifier(tmp_path / "clf.pt")
    assert not final.training
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(final(x), model.eval()(x))
    saved = json.loads((tmp_path / "clf.history.json").read_text())
    assert saved["final_val_acc"] == hist["final_val_acc"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_written_atomically(data, tmp_path, monkeypatch):
    """Every epoch's state goes through atomic_save (temp file + rename)."""
    import gcln_fast.training.classifier as C

    calls = []
    real = C.atomic_save

    def spy(obj, path):
        calls.append((obj["epoch"], str(path)))
        return real(obj, path)

    monkeypatch.setattr(C, "atomic_save", spy)
    _train(data, tmp_path / "s.pt", epochs=2)
    assert calls == [(1, str(tmp_path / "s.pt")), (2, str(tmp_path / "s.pt"))]
    assert (tmp_path / "s.final.pt").is_file()  # default final path


def test_interrupted_then_resumed_matches_uninterrupted(data, tmp_path):
    ref_model, ref_hist = _train(data, tmp_path / "ref.pt", epochs=2)

    class Crash(Exception):
        pass

    def crash(epoch, hist):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        _train(data, tmp_path / "run.pt", epochs=2, on_epoch_end=crash)
    state = torch.load(tmp_path / "run.pt", weights_only=True)
    assert state["epoch"] == 1 and not (tmp_path / "run.final.pt").exists()

    model, hist = _train(data, tmp_path / "run.pt", epochs=2, resume=True)
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2]
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 2
    assert (tmp_path / "run.final.pt").is_file()
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    assert hist["epochs"][-1]["val_acc"] == pytest.approx(ref_hist["epochs"][-1]["val_acc"], abs=0.01)

    # resuming a finished run trains nothing more
    _, again = _train(data, tmp_path / "run.pt", epochs=2, resume=True)
    assert len(again["epochs"]) == 2
    with pytest.raises(ValueError, match="epochs"):
        _train(data, tmp_path / "run.pt", epochs=3, resume=True)


def test_augment_crop_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32)
    y = augment_batch(x, pad=2, hflip=False, gen=g)
    assert y.shape == x.shape
    # each output is the input shifted by at most 2 px: the centre 28x28 appears in it
    for i in range(5):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(y[i, :, 2:30, 2:30], x[i, :, dy : dy + 28, dx : dx + 28])
        ]
        assert hits


def test_cli_train_classifier(tmp_path, capsys):
    from gcln_fast.commands.main import main

    out = tmp_path / "m.pt"
    argv = [
        "train-classifier",
        "--dataset",
        "embedded",
        "--data-root",
        str(tmp_path / "d"),
        "--epochs",
        "1",
        "--train-size",
        "200",
        "--test-size",
        "100",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert out.is_file() and (tmp_path / "m.state.pt").is_file() and (tmp_path / "m.history.json").is_file()
    model = load_classifier(out)
    assert model.meta["dataset"] == "embedded" and model.meta["train_size"] == 200
    assert main(argv + ["--resume"]) == 0  # already finished: nothing to do, still succeeds
