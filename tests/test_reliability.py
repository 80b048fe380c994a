"""The ``gcln`` commands as a new user meets them (issue 16): reproducible seeds, corrupt and wrong
checkpoint files named, non-finite losses stopped, one run per output, resumes with other settings
refused unless forced, every bad flag refused before work starts, installable with old build tools."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_utils import _flip_tensor_bytes

from gcln_fast.commands.main import main
from gcln_fast.gcln import Generator, load_generator
from gcln_fast.models import build_classifier, load_classifier, save_classifier
from gcln_fast.utils.checkpoint import atomic_save, load_checkpoint
from gcln_fast.utils.lock import lock_output, lock_path_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A classifier, a classifier with NaN weights, a GCLN checkpoint, a list, a data root."""
    d = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    clf = build_classifier("small_cnn")
    save_classifier(clf, d / "clf.pt", arch="small_cnn", num_classes=10)
    with torch.no_grad():
        clf.net[0].weight.fill_(float("nan"))
    save_classifier(clf, d / "nan.pt", arch="small_cnn", num_classes=10)
    g = Generator(q=10, width=8, blocks=1)
    atomic_save({"kind": "gcln", "config": {"generator": g.config}, "generator": g.state_dict()}, d / "gcln.pt")
    torch.save([1, 2, 3], d / "list.pt")
    (d / "notes.txt").write_text("my notes\n")
    return {p.stem: p for p in d.iterdir()} | {"dir": d, "data": d / "data"}


def cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of ``gcln argv``, whether it returns or exits (argparse)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def train_classifier_argv(files, out, *extra):
    return (
        "train-classifier", "--data-root", files["data"], "--train-size", 128, "--test-size", 32,
        "--epochs", 1, "--batch-size", 64, "--threads", 1, "--no-progress", "--out", out, *extra,
    )  # fmt: skip


def train_gcln_argv(files, out, *extra, classifier=None):
    return (
        "train", "--classifier", classifier or files["clf"], "--data-root", files["data"], "--train-size", 64,
        "--batch-size", 32, "--width", 8, "--epochs", 1, "--detector-epochs", 1, "--threads", 1,
        "--no-progress", "--out", out, *extra,
    )  # fmt: skip


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- 1. --seed


def test_seed_makes_train_classifier_reproducible(files, tmp_path, capsys):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert cli(capsys, *train_classifier_argv(files, tmp_path / f"{name}.pt", "--seed", seed))[0] == 0
    a, b, c = (load_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "abc")
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


@pytest.mark.slow
def test_seed_makes_gcln_train_reproducible(files, tmp_path, capsys):
    for name in ("a", "b"):
        assert cli(capsys, *train_gcln_argv(files, tmp_path / name, "--seed", 2))[0] == 0
    a, b = (load_checkpoint(tmp_path / n / "gcln.pt", kind="gcln") for n in "ab")
    assert _same_weights(a["generator"], b["generator"]) and _same_weights(a["detector"], b["detector"])


def test_gcln_train_finetune_writes_the_fine_tuned_classifier(files, tmp_path, capsys):
    from gcln_fast.models import load_classifier

    out = tmp_path / "ft"
    code, text = cli(capsys, *train_gcln_argv(files, out, "--variant", "finetune", "--guard-size", 0))
    assert code == 0, text
    ck = load_checkpoint(out / "gcln.pt", kind="gcln")
    fine_tuned = load_classifier(out / "classifier.pt")
    assert _same_weights(fine_tuned.state_dict(), ck["classifier"])
    assert not _same_weights(fine_tuned.state_dict(), load_classifier(files["clf"]).state_dict())


# --------------------------------------------------------------------------- 2, 6. corrupt and wrong files


def _damaged(files, tmp_path, case: str) -> tuple[Path, str]:
    data = files["clf"].read_bytes()
    path = tmp_path / f"{case}.pt"
    if case == "corrupted":
        path.write_bytes(data)
        _flip_tensor_bytes(path)
        return path, "is corrupted: archive member .* fails its CRC-32 check"
    contents = {"empty": (b"", "is empty"), "truncated": (data[: len(data) // 2], "is truncated or damaged")}
    if case in contents:
        path.write_bytes(contents[case][0])
        return path, contents[case][1]
    return files[case], {
        "notes": "is not a checkpoint of this package",
        "list": "is not a trained classifier .*: it holds a list",
        "gcln": "is not a trained classifier .*: it is a GCLN checkpoint",
    }[case]


@pytest.mark.parametrize("case", ["corrupted", "empty", "truncated", "notes", "list", "gcln"])
@pytest.mark.parametrize("command", ["train", "eval", "train-classifier --init-from"])
def test_bad_classifier_files_are_named_before_work_starts(files, tmp_path, capsys, case, command):
    path, message = _damaged(files, tmp_path, case)
    out = tmp_path / "out"
    argv = {
        "train": ("train", "--classifier", path, "--out", out),
        "eval": ("eval", "--classifier", files["clf"], "--substitute", path, "--out", out),
        "train-classifier --init-from": ("train-classifier", "--init-from", path, "--out", out / "c.pt"),
    }[command]
    code, err = cli(capsys, *argv)
    assert code == 2 and str(path) in err and re.search(message, err), err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("bad", ["clf", "list"])
def test_a_wrong_gcln_file_is_named(files, tmp_path, capsys, bad):
    argv = ("eval", "--classifier", files["clf"], "--gcln", files[bad], "--n", 2, "--data-root", files["data"])
    code, err = cli(capsys, *argv, "--out", tmp_path)
    what = {"clf": "it is a trained classifier", "list": "it holds a list"}[bad]
    assert code == 1 and f"{files[bad]} is not a GCLN checkpoint" in err and what in err


# --------------------------------------------------------------------------- 2. non-finite losses


@pytest.mark.slow
def test_nan_loss_stops_gcln_train_with_the_step_and_keeps_the_last_checkpoint(files, tmp_path, capsys):
    code, err = cli(capsys, *train_gcln_argv(files, tmp_path, classifier=files["nan"]))
    assert code == 1
    # 64 images, 8 held out for the divergence guard, batch 32: step 1 is D alone (phase 1), step 2 G's first
    assert "training stopped: loss_g = nan at step 2 (phase 2, epoch 1)" in err
    assert f"The last good checkpoint, {tmp_path / 'gcln.pt'}" in err
    ck = load_checkpoint(tmp_path / "gcln.pt", kind="gcln")
    assert ck["detector_epochs_done"] == 1 and ck["epoch"] == 0
    assert torch.isfinite(load_generator(tmp_path / "gcln.pt")(torch.rand(2, 3, 32, 32))).all()


def test_diverging_train_classifier_exits_non_zero(files, tmp_path, capsys):
    code, err = cli(capsys, *train_classifier_argv(files, tmp_path / "c.pt", "--lr", "1e30"))
    assert code == 1 and "training stopped: train_loss = nan at step" in err
    assert not (tmp_path / "c.pt").exists()


# --------------------------------------------------------------------------- 3. one run per output


def test_second_run_into_a_held_output_is_refused(files, tmp_path, capsys):
    (tmp_path / "g").mkdir()
    # held by this process (a lock is per open file, so this is what another process would meet)
    with lock_output(tmp_path / "g"), lock_output(tmp_path / "c.pt"):
        code, err = cli(capsys, *train_gcln_argv(files, tmp_path / "g"))
        assert code == 1 and f"{tmp_path / 'g'} is in use by process {os.getpid()}" in err
        code, err = cli(capsys, *train_classifier_argv(files, tmp_path / "c.pt"))
        assert code == 1 and f"c.pt is in use by process {os.getpid()}" in err
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "g" / "gcln.pt").exists()
    # what a killed run leaves: its lock file, naming it, with no lock held
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path_for(tmp_path / "c.pt").write_text(json.dumps({"pid": dead.pid, "host": "h", "command": "gcln"}))
    code, err = cli(capsys, *train_classifier_argv(files, tmp_path / "c.pt"))
    assert code == 0 and f"left by process {dead.pid}, which is gone" in err
    assert not lock_path_for(tmp_path / "c.pt").exists()  # released when the command ended


# --------------------------------------------------------------------------- 4. --resume with other settings


def test_train_classifier_resume_with_other_settings(files, tmp_path, capsys):
    out = tmp_path / "c.pt"
    assert cli(capsys, *train_classifier_argv(files, out))[0] == 0
    code, err = cli(capsys, *train_classifier_argv(files, out, "--resume", "--lr", "0.01", "--epochs", 2))
    assert code == 1 and "cannot resume" in err and "epochs was 1, now 2; lr was 0.05, now 0.01" in err
    code, err = cli(capsys, *train_classifier_argv(files, out, "--resume", "--lr", "0.01", "--epochs", 2, "--force"))
    assert code == 0
    meta = load_classifier(out).meta
    assert meta["epochs"] == 2 and meta["resume_history"][0]["changed"] == {"epochs": [1, 2], "lr": [0.05, 0.01]}


@pytest.mark.slow
def test_gcln_train_resume_with_other_settings(files, tmp_path, capsys):
    argv = train_gcln_argv(files, tmp_path, "--detector-epochs", 0)
    assert cli(capsys, *argv)[0] == 0
    code, err = cli(capsys, *argv, "--resume", "--epochs", 2, "--lr", "0.0005", "--seed", 4)
    assert (
        code == 1 and "train.lr was 0.001, now 0.0005; train.lr_d was 0.001, now 0.0005; train.seed was 0, now 4" in err
    )
    code, err = cli(capsys, *argv, "--resume", "--width", 4, "--force")
    assert code == 1 and "generator.width was 8, now 4" in err and "even with --force" in err
    assert cli(capsys, *argv, "--resume", "--epochs", 2, "--lr", "0.0005", "--force")[0] == 0
    ck = load_checkpoint(tmp_path / "gcln.pt", kind="gcln")
    assert ck["epoch"] == 2 and ck["opt_g"]["param_groups"][0]["lr"] == 0.0005
    assert ck["config"]["resume_history"][0]["changed"] == {"train.lr": [0.001, 0.0005], "train.lr_d": [0.001, 0.0005]}


# --------------------------------------------------------------------------- 5. bad flags

BAD_FLAGS = [
    (("train", "--epochs", "-1"), "argument --epochs: expected an integer >= 1, got -1"),
    (("train", "--batch-size", "0"), "argument --batch-size: expected an integer >= 1, got 0"),
    (("train", "--lambda", "1.5"), "argument --lambda: expected a number in [0, 1], got 1.5"),
    (("train", "--q", "nan"), "argument --q: expected a finite number > 0, got nan"),
    (("train", "--threads", "0"), "argument --threads: expected an integer >= 1"),
    (("train", "--out", "{notes}"), "--out {notes} exists and is not a directory"),
    (("train", "--out", "{notes}/sub"), "cannot create {notes}/sub"),
    (("train-classifier", "--epochs", "0"), "argument --epochs: expected an integer >= 1, got 0"),
    (("train-classifier", "--lr", "-0.1"), "argument --lr: expected a finite number > 0"),
    (("train-classifier", "--out", "{dir}"), "--out {dir} is a directory: this command writes a file"),
    (("train-classifier", "--out", "{notes}"), "--out {notes} exists and will not be overwritten"),
    (("train-classifier", "--adv-eps", "8"), "--adv-eps: only with --adversarial"),
    (("train-classifier", "--adversarial", "--adv-eps", "300"), "adversarial eps must be in (0, 1]"),
    (("train-classifier", "--force"), "--force only applies with --resume"),
    (("train-classifier", "--device", "tpu"), "argument --device: expected cpu, cuda, cuda:N or auto"),
    (("eval", "--n", "0"), "argument --n: expected an integer >= 1, got 0"),
    (("eval", "--steps", "x"), "argument --steps: expected an integer >= 1, got 'x'"),
    (("eval", "--out", "{notes}"), "--out {notes} exists and is not a directory"),
    (("demo", "--threads", "-2"), "argument --threads: expected an integer >= 1, got -2"),
    (("demo", "--out", "{notes}"), "--out {notes} exists and is not a directory"),
]
DEFAULTS = {
    "train": ("--classifier", "{clf}", "--out", "{tmp}/o"),
    "train-classifier": ("--out", "{tmp}/o.pt", "--data-root", "{tmp}/data"),
    "eval": ("--classifier", "{clf}", "--out", "{tmp}/o"),
    "demo": ("--out", "{tmp}/o"),
}


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_are_refused_before_work_starts(files, tmp_path, capsys, argv, message):
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    command, *flags = (a.format(**names) for a in argv)
    defaults = [a.format(**names) for a in DEFAULTS[command]]
    code, err = cli(capsys, command, *defaults, *flags)  # later flags win over the defaults
    assert code == 2, err
    assert message.format(**names) in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.pt").exists() and not (tmp_path / "data").exists()
    assert files["notes"].read_text() == "my notes\n"


def test_cuda_device_refused_where_there_is_none(files, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = cli(capsys, "train", "--classifier", files["clf"], "--out", tmp_path, "--device", "cuda")
    assert code == 2 and "argument --device: cuda: CUDA is not available" in err


# --------------------------------------------------------------------------- 8. old build tools


def test_build_requirements_name_what_setup_py_imports():
    """``[build-system] requires`` covers every distribution setup.py imports (a build in an isolated
    environment has nothing else), with a setuptools floor that builds editable installs (PEP 660)."""
    import ast

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requires}
    tree = ast.parse((ROOT / "setup.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party <= names, f"setup.py imports {sorted(third_party - names)} not in [build-system] requires"
    floor = next(r for r in requires if r.startswith("setuptools"))
    assert floor.startswith("setuptools>=") and int(floor.split(">=")[1].split(".")[0]) >= 64


@pytest.mark.slow
def test_pyproject_is_valid_for_the_setuptools_python_bundles(tmp_path):
    """The setuptools a fresh ``python3 -m venv`` gets (65.5 with Python 3.11) accepts pyproject.toml:
    a PEP 639 ``license = "MIT"`` string failed there ("project.license must be valid exactly by one
    definition")."""
    import ensurepip

    bundled = [p.name for p in (Path(ensurepip.__file__).parent / "_bundled").glob("setuptools-*.whl")]
    if not bundled:
        pytest.skip("this Python's ensurepip bundles no setuptools (3.12+)")
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True)
    py = tmp_path / "venv" / "bin" / "python"
    check = (
        "import setuptools; from setuptools.config.pyprojecttoml import read_configuration; "
        f"read_configuration({str(ROOT / 'pyproject.toml')!r}); print(setuptools.__version__)"
    )
    res = subprocess.run([py, "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() in bundled[0]
