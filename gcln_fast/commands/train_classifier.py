"""``gcln train-classifier``: train a target classifier on one of the datasets, standard or with
PGD adversarial training (``--adversarial``, Madry et al. 2018), from scratch or fine-tuning a
saved classifier (``--init-from``), optionally within a wall-clock budget (``--time-budget``).

Writes ``--out`` (final weights, ``save_classifier`` format, for ``load_classifier``),
``<out stem>.state<suffix>`` (resumable per-epoch training state; ``--resume`` continues
from it) and ``<out stem>.history.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._args import (
    checkpoint_arg,
    device_arg,
    nonnegative_float,
    positive_float,
    positive_int,
    prepare_run,
    unit_interval,
)

CLASSIFIER_KINDS = ("classifier", "classifier_train_state")
DEFAULT_EPOCHS = 5
BUDGET_EPOCHS = 1000  # with --time-budget and no --epochs: the budget, not the epochs, ends the run
ADV_FLAGS = {"adv_eps": "--adv-eps", "adv_step": "--adv-step", "adv_steps": "--adv-steps", "adv_ramp": "--adv-ramp"}


def state_path_for(out) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def _add_adversarial_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adversarial training (PGD, Madry et al. 2018)")
    g.add_argument("--adversarial", action="store_true", help="train on PGD examples of the model itself")
    g.add_argument("--adv-eps", type=positive_float, default=None, help="L-inf radius in 1/255 units (default 8)")
    g.add_argument("--adv-step", type=positive_float, default=None, help="PGD step in 1/255 units (default eps/4)")
    g.add_argument("--adv-steps", type=positive_int, default=None, help="PGD iterations per batch (default 7)")
    g.add_argument(
        "--adv-ramp",
        type=unit_interval,
        default=None,
        help="fraction of training over which eps grows from 0 (default 0.4; 0 = full eps from the start)",
    )


def add_parser(subparsers, name: str = "train-classifier") -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="train a target classifier (small_cnn / resnet18 / resnet34), standard or adversarial",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="embedded", choices=["embedded", "cifar10", "svhn", "folder"])
    p.add_argument(
        "--data-root",
        default=None,
        help="dataset directory (default: $GCLN_DATA/<dataset> or ~/.cache/gcln_fast/<dataset>)",
    )
    p.add_argument("--download", action="store_true", help="download CIFAR-10 / SVHN if missing")
    p.add_argument(
        "--arch",
        default=None,
        choices=["small_cnn", "resnet18", "resnet34"],
        help="default: small_cnn, or --init-from's",
    )
    p.add_argument(
        "--init-from",
        type=checkpoint_arg(*CLASSIFIER_KINDS),
        default=None,
        metavar="CHECKPOINT",
        help="start from this classifier's weights (fine-tuning) instead of a random initialisation",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"epochs (default {DEFAULT_EPOCHS}; with --time-budget an upper bound, default {BUDGET_EPOCHS})",
    )
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS", help="training wall time")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument(
        "--lr", type=positive_float, default=None, help="peak learning rate (default: 0.05 sgd, 0.003 adamw)"
    )
    p.add_argument("--weight-decay", type=nonnegative_float, default=5e-4)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument(
        "--no-augment", action="store_true", help="disable random-crop (and, for CIFAR-10, flip) augmentation"
    )
    p.add_argument(
        "--train-size",
        type=positive_int,
        default=None,
        help="number of training images (default: all / 20000 embedded)",
    )
    p.add_argument(
        "--test-size", type=positive_int, default=None, help="number of held-out images (default: all / 2000 embedded)"
    )
    _add_adversarial_arguments(p)
    p.add_argument("--out", default="runs/classifier.pt", help="final classifier file")
    p.add_argument("--resume", action="store_true", help="continue from <out stem>.state<suffix> if it exists")
    p.add_argument("--force", action="store_true", help="with --resume: continue even if settings changed (recorded)")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the embedded data seed)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def adversarial_settings(args) -> dict | None:
    """The ``adversarial=`` argument of ``train_classifier`` from the flags (radii from 1/255 units)."""
    from ..utils.errors import UsageError

    given = [flag for key, flag in ADV_FLAGS.items() if getattr(args, key) is not None]
    if not args.adversarial:
        if given:
            raise UsageError(f"{', '.join(given)}: only with --adversarial")
        return None
    settings = {}
    if args.adv_eps is not None:
        settings["eps"] = args.adv_eps / 255
    if args.adv_step is not None:
        settings["step"] = args.adv_step / 255
    if args.adv_steps is not None:
        settings["steps"] = args.adv_steps
    if args.adv_ramp is not None:
        settings["ramp"] = args.adv_ramp
    from ..training.adversarial import AdversarialTraining

    try:
        AdversarialTraining.from_any(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _build_model(args, n_classes: int):
    from gcln_fast.data import STATS
    from gcln_fast.models import build_classifier, load_classifier
    from gcln_fast.utils.errors import UsageError

    if args.init_from is None:
        mean, std = STATS[args.dataset]
        return build_classifier(args.arch or "small_cnn", n_classes, mean=mean, std=std)
    model = load_classifier(args.init_from)
    if args.arch is not None and args.arch != model.arch:
        raise UsageError(f"--arch {args.arch} differs from --init-from {args.init_from}'s architecture {model.arch}")
    if model.num_classes != n_classes:
        raise UsageError(
            f"--init-from {args.init_from} has {model.num_classes} classes, --dataset {args.dataset} has {n_classes}"
        )
    return model


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


def run(args) -> int:
    from gcln_fast.utils.errors import UsageError

    adversarial = adversarial_settings(args)
    if args.force and not args.resume:
        raise UsageError("--force only applies with --resume")
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS if args.time_budget is None else BUDGET_EPOCHS
    prepare_run(args, out="file", file_kinds=CLASSIFIER_KINDS)
    import torch

    from gcln_fast.data import get_dataset
    from gcln_fast.training.classifier import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    kw = dict(root=args.data_root, download=args.download, seed=args.seed)
    train_set = get_dataset(args.dataset, "train", size=args.train_size, **kw)
    test_set = get_dataset(args.dataset, "test", size=args.test_size, **kw)
    n_classes = len(getattr(train_set, "classes", range(10)))
    print(
        f"{args.dataset}: {len(train_set)} train / {len(test_set)} test images, {n_classes} classes "
        f"({time.time() - t0:.1f}s)"
    )
    model = _build_model(args, n_classes)
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 0.003)
    out = Path(args.out)
    meta = {"dataset": args.dataset, "train_size": len(train_set), "test_size": len(test_set), "seed": args.seed}
    if args.init_from is not None:
        meta["init_from"] = str(args.init_from)

    def log_epoch(epoch, hist):  # the progress bar prints these itself
        if args.no_progress:
            r = hist["epochs"][-1]
            extra = f" test_pgd_acc {r['val_pgd_acc']:.4f}" if "val_pgd_acc" in r else ""
            print(
                f"epoch {epoch}/{args.epochs}: train_loss {_fmt(r['train_loss'])} train_acc {_fmt(r['train_acc'])} "
                f"test_acc {_fmt(r.get('val_acc'))}{extra} ({r['seconds']:.1f}s)",
                flush=True,
            )

    history = train_classifier(
        model,
        train_set,
        test_set,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        weight_decay=args.weight_decay,
        device=args.device,
        checkpoint_path=state_path_for(out),
        final_path=out,
        resume=args.resume,
        force=args.force,
        seed=args.seed,
        progress=not args.no_progress,
        augment=not args.no_augment,
        optimizer=args.optimizer,
        adversarial=adversarial,
        time_budget=args.time_budget,
        on_epoch_end=log_epoch,
        meta=meta,
    )
    acc = history.get("final_val_acc")
    print(f"done in {time.time() - t0:.1f}s: test accuracy {acc:.4f}" if acc is not None else "done")
    print(f"classifier: {out}\nstate: {state_path_for(out)}")
    return 0
