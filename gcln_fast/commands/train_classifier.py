"""``gcln train-classifier``: train a target classifier on one of the datasets.

Writes ``--out`` (final weights, ``save_classifier`` format, for ``load_classifier``),
``<out stem>.state<suffix>`` (resumable per-epoch training state; ``--resume`` continues
from it) and ``<out stem>.history.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def state_path_for(out) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def add_parser(subparsers, name: str = "train-classifier") -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="train a target classifier (small_cnn / resnet18 / resnet34)",
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
    p.add_argument("--arch", default="small_cnn", choices=["small_cnn", "resnet18", "resnet34"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 sgd, 0.003 adamw)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument(
        "--no-augment", action="store_true", help="disable random-crop (and, for CIFAR-10, flip) augmentation"
    )
    p.add_argument(
        "--train-size", type=int, default=None, help="number of training images (default: all / 20000 embedded)"
    )
    p.add_argument(
        "--test-size", type=int, default=None, help="number of held-out images (default: all / 2000 embedded)"
    )
    p.add_argument("--out", default="runs/classifier.pt", help="final classifier file")
    p.add_argument("--resume", action="store_true", help="continue from <out stem>.state<suffix> if it exists")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the embedded data seed)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from gcln_fast.data import STATS, get_dataset
    from gcln_fast.models import build_classifier
    from gcln_fast.training.classifier import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    t0 = time.time()
    kw = dict(root=args.data_root, download=args.download, seed=args.seed)
    train_set = get_dataset(args.dataset, "train", size=args.train_size, **kw)
    test_set = get_dataset(args.dataset, "test", size=args.test_size, **kw)
    n_classes = len(getattr(train_set, "classes", range(10)))
    print(
        f"{args.dataset}: {len(train_set)} train / {len(test_set)} test images, {n_classes} classes "
        f"({time.time() - t0:.1f}s)"
    )
    mean, std = STATS[args.dataset]
    model = build_classifier(args.arch, n_classes, mean=mean, std=std)
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 0.003)
    out = Path(args.out)

    def log_epoch(epoch, hist):  # the progress bar prints these itself
        if args.no_progress:
            r = hist["epochs"][-1]
            print(
                f"epoch {epoch}/{args.epochs}: train_loss {r['train_loss']:.4f} train_acc {r['train_acc']:.4f} "
                f"test_acc {r.get('val_acc', float('nan')):.4f} ({r['seconds']:.1f}s)",
                flush=True,
            )

    history = train_classifier(
        model,
        train_set,
        test_set,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        device=args.device,
        checkpoint_path=state_path_for(out),
        final_path=out,
        resume=args.resume,
        seed=args.seed,
        progress=not args.no_progress,
        augment=not args.no_augment,
        optimizer=args.optimizer,
        on_epoch_end=log_epoch,
        meta={"dataset": args.dataset, "train_size": len(train_set), "test_size": len(test_set), "seed": args.seed},
    )
    acc = history.get("final_val_acc")
    print(f"done in {time.time() - t0:.1f}s: test accuracy {acc:.4f}" if acc is not None else "done")
    print(f"classifier: {out}\nstate: {state_path_for(out)}")
    return 0
