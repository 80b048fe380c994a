"""Classifier training: learns, checkpoints atomically every epoch, resumes (refusing changed
settings unless forced), stops on a non-finite loss; PGD adversarial training; a time budget."""

import json

import numpy as np
import pytest
import torch

from gcln_fast.attacks import pgd
from gcln_fast.data import ArrayDataset, get_dataset
from gcln_fast.models import build_classifier, load_classifier, save_classifier
from gcln_fast.training.adversarial import AdversarialTraining
from gcln_fast.training.classifier import STATE_KIND, augment_batch, train_classifier, warmup_cosine
from gcln_fast.utils.checkpoint import load_checkpoint
from gcln_fast.utils.errors import NonFiniteLossError, ResumeMismatchError
from gcln_fast.utils.metrics import accuracy


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


def _train(data, path, arch="small_cnn", **kw):
    torch.manual_seed(0)
    model = build_classifier(arch)
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 64)
    kw.setdefault("lr", 0.05)
    hist = train_classifier(model, data[0], data[1], checkpoint_path=path, progress=False, **kw)
    return model, hist


def test_learns_and_writes_files(root, tmp_path):
    # SVHN-like data has a slow start (a plateau near chance for the first ~100 steps);
    # 2000 images x 3 epochs at batch 32 (~190 steps) leaves chance clearly behind.
    data = get_dataset("embedded", "train", root=root, size=2000), get_dataset("embedded", "test", root=root, size=400)
    layouts = set()  # (weight, input) channels-last at the first conv during training steps
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, inp: (
            layouts.add(
                tuple(
                    t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                    for t in (m.weight, inp[0])
                )
            )
            if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3 and m.training
            else None
        )
    )
    try:
        model, hist = _train(
            data,
            tmp_path / "clf.state.pt",
            final_path=tmp_path / "clf.pt",
            epochs=3,
            batch_size=32,
            lr=0.003,
            optimizer="adamw",
        )
    finally:
        hook.remove()
    assert layouts == {(True, True)}  # trained channels-last (preferred_memory_format)
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
    assert all(p.is_contiguous() for p in model.parameters())  # trained channels-last, handed back in NCHW
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


# --------------------------------------------------------------------------- a non-finite loss


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    torch.manual_seed(0)
    model = build_classifier("small_cnn")
    poisoned = []
    model.register_forward_hook(lambda m, i, out: out * float("nan") if poisoned else None)
    path = tmp_path / "s.pt"
    spe = 300 // 64 + 1  # steps per epoch
    with pytest.raises(NonFiniteLossError, match=rf"train_loss = nan at step {spe + 1} \(epoch 2\).*s\.pt"):
        train_classifier(
            model,
            data[0],
            data[1],
            epochs=3,
            batch_size=64,
            checkpoint_path=path,
            progress=False,
            on_epoch_end=lambda epoch, hist: poisoned.append(epoch),
        )
    state = load_checkpoint(path, kind=STATE_KIND)  # intact: the end of epoch 1
    assert state["epoch"] == 1 and state["step"] == spe
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "s.final.pt").exists()


# --------------------------------------------------------------------------- resume with other settings


def test_resume_with_other_settings_is_refused_unless_forced(data, tmp_path):
    _train(data, tmp_path / "r.pt", epochs=1, lr=0.05, meta={"dataset": "embedded"})
    with pytest.raises(ResumeMismatchError, match=r"lr was 0\.05, now 0\.01; seed was 0, now 3\. "):
        _train(data, tmp_path / "r.pt", epochs=1, lr=0.01, seed=3, resume=True)
    with pytest.raises(ResumeMismatchError, match="arch was 'small_cnn', now 'resnet18'.*even with --force"):
        _train(data, tmp_path / "r.pt", epochs=1, arch="resnet18", resume=True, force=True)
    with pytest.warns(UserWarning, match="changed settings"):
        _, hist = _train(data, tmp_path / "r.pt", epochs=2, lr=0.01, resume=True, force=True)
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2]
    state = load_checkpoint(tmp_path / "r.pt", kind=STATE_KIND)
    # the new learning rate is the one used (not the one the saved optimizer state held)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        0.01 * warmup_cosine(2 * 5)(9)
    )  # the last step's
    (record,) = load_classifier(tmp_path / "r.final.pt").meta["resume_history"]
    assert record["changed"] == {"epochs": [1, 2], "lr": [0.05, 0.01]} and record["previous"]["lr"] == 0.05


# --------------------------------------------------------------------------- PGD adversarial training


def test_radius_ramp():
    adv = AdversarialTraining(eps=8 / 255, ramp=0.4)
    assert adv.budget(0.0) == (0.0, 0.0)
    assert adv.budget(0.2) == pytest.approx((4 / 255, 1 / 255))  # step follows eps / 4
    assert adv.budget(0.4) == pytest.approx((8 / 255, 2 / 255)) == adv.budget(0.9)
    assert AdversarialTraining(eps=4 / 255, step=2 / 255, ramp=0).budget(0.0) == (4 / 255, 2 / 255)
    for bad in ({"eps": 8}, {"ramp": 1.5}, {"steps": 0}, {"step": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AdversarialTraining(**bad)
    with pytest.raises(ValueError, match="unknown adversarial setting"):
        AdversarialTraining.from_any({"epsilon": 0.1})


def _toy(n: int, seed: int) -> ArrayDataset:
    """8x8 two-class images with a robust feature (the left half's brightness, 0.3 or 0.7, which
    agrees with the label for 80% of the images) and a non-robust one (a +-6/255 checkerboard whose
    sign is the label, always right, but flipped by any attack of radius > 6/255)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    robust = np.where(rng.random(n) < 0.8, y, 1 - y)
    img = np.full((n, 3, 8, 8), 0.5, np.float32)
    img[:, :, :, :4] = np.where(robust, 0.7, 0.3)[:, None, None, None]
    board = ((np.arange(8)[:, None] + np.arange(8)[None]) % 2 * 2 - 1).astype(np.float32)
    img += np.where(y, 1.0, -1.0)[:, None, None, None] * board * 6 / 255
    img += rng.normal(0, 2 / 255, img.shape).astype(np.float32)
    img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return ArrayDataset(img, y, name="toy", split="train", classes=["0", "1"])


def test_adversarial_training_learns_the_robust_feature(tmp_path):
    """Standard training takes the always-right non-robust feature (clean 100%, PGD at 8/255 ~0%);
    PGD training at 8/255 cannot use it and learns the robust one (PGD accuracy ~ its 80%)."""
    train, test = _toy(512, 0), _toy(256, 1)
    X, Y = torch.from_numpy(test.images).float() / 255, torch.from_numpy(test.labels)
    result = {}
    for name, adv in (("standard", None), ("pgd", {"eps": 8 / 255, "steps": 5, "ramp": 0.3, "val_n": 64})):
        torch.manual_seed(0)
        model = build_classifier("small_cnn", 2)
        hist = train_classifier(
            model, train, test, epochs=6, batch_size=64, lr=0.003, optimizer="adamw", augment=False,
            checkpoint_path=tmp_path / f"{name}.pt", progress=False, adversarial=adv,
        )  # fmt: skip
        model.eval()
        x_adv = pgd(model, X, Y, eps=8 / 255, step=2 / 255, steps=10, generator=torch.Generator().manual_seed(0))
        result[name] = (accuracy(model, X, Y), accuracy(model, x_adv, Y), hist)
    clean_std, pgd_std, _ = result["standard"]
    clean_adv, pgd_adv, hist_adv = result["pgd"]
    assert clean_std > 0.95 and pgd_std < 0.2
    assert pgd_adv > 0.7 and pgd_adv > pgd_std + 0.5
    assert "val_pgd_acc" in hist_adv["epochs"][-1] and "val_pgd_acc" not in result["standard"][2]["epochs"][-1]
    assert load_classifier(tmp_path / "pgd.final.pt").meta["adversarial"]["eps"] == pytest.approx(8 / 255)


def test_time_budget_ends_the_run_and_drives_the_schedule(data, tmp_path):
    _, hist = _train(data, tmp_path / "t.pt", epochs=1000, time_budget=3.0)
    assert hist["stopped_by"] == "time_budget"
    assert 3.0 <= hist["train_seconds"] < 3.0 + 10 * max(e["seconds"] / max(1, e["steps"]) for e in hist["epochs"])
    assert len(hist["epochs"]) < 1000
    # the learning rate followed the clock: warm-up, peak and most of the cosine decay in 3 s
    lrs = [e["lr"] for e in hist["epochs"]]
    assert lrs[-1] < 0.2 * 0.05
    # resuming a run whose budget is spent trains nothing more
    _, again = _train(data, tmp_path / "t.pt", epochs=1000, time_budget=3.0, resume=True)
    assert len(again["epochs"]) == len(hist["epochs"])


def test_cli_adversarial_fine_tuning(tmp_path, capsys):
    """``--init-from`` starts from the saved weights (a tiny learning rate leaves them in place);
    ``--adversarial`` settings are recorded; a conflicting ``--arch`` is refused."""
    from gcln_fast.commands.main import main

    torch.manual_seed(1)
    base = build_classifier("small_cnn")
    save_classifier(base, tmp_path / "base.pt", arch="small_cnn", num_classes=10)
    common = ["train-classifier", "--data-root", str(tmp_path / "d"), "--train-size", "64", "--test-size", "32"]
    common += ["--batch-size", "32", "--threads", "1", "--no-progress", "--init-from", str(tmp_path / "base.pt")]
    argv = common + ["--adversarial", "--adv-eps", "4", "--adv-steps", "2", "--lr", "1e-12", "--epochs", "1"]
    assert main(argv + ["--out", str(tmp_path / "ft.pt")]) == 0
    assert "test_pgd_acc" in capsys.readouterr().out
    tuned = load_classifier(tmp_path / "ft.pt")
    assert tuned.meta["init_from"] == str(tmp_path / "base.pt")
    assert tuned.meta["adversarial"]["eps"] == pytest.approx(4 / 255) and tuned.meta["adversarial"]["steps"] == 2
    for (name, a), b in zip(base.state_dict().items(), tuned.state_dict().values(), strict=True):
        if "running" not in name and "num_batches" not in name:  # batch-norm statistics do move
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert main(common + ["--arch", "resnet18", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--arch resnet18 differs from --init-from" in capsys.readouterr().err
