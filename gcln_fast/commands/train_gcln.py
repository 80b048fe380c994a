"""``gcln train``: train the GCLN generator and detector against a saved classifier."""

from __future__ import annotations

import argparse
import os

from ._args import checkpoint_arg, device_arg, nonnegative_int, positive_float, positive_int, prepare_run, unit_interval


def add_parser(subparsers, name: str = "train"):
    p = subparsers.add_parser(
        name,
        help="train GCLN (G and D) against a trained classifier",
        description="Phase 1 trains the detector D on clean vs attacked images; phase 2 trains the cleaning "
        "network G against D (eq. 6 of the paper). Under torchrun it runs data-parallel (DDP).",
    )
    p.add_argument(
        "--classifier",
        required=True,
        type=checkpoint_arg("classifier", "classifier_train_state"),
        help="classifier checkpoint (gcln train-classifier output)",
    )
    p.add_argument("--dataset", default="embedded", help="embedded | cifar10 | svhn | folder (default: embedded)")
    p.add_argument("--data-root", default=None, help="dataset root (default: the dataset's default root)")
    p.add_argument("--train-size", type=positive_int, default=None, help="use the first N training images")
    p.add_argument("--epochs", type=positive_int, default=5, help="adversarial (phase 2) epochs")
    p.add_argument("--detector-epochs", type=nonnegative_int, default=1, help="phase 1 epochs (detector alone)")
    p.add_argument("--q", type=positive_float, default=10.0, help="quantization step of the QNT layer (8-bit units)")
    p.add_argument("--trainable-q", action="store_true", help="learn the quantization step")
    p.add_argument("--qnt-features", action="store_true", help="also quantize G's intermediate feature maps")
    p.add_argument("--width", type=positive_int, default=32, help="G's base width")
    p.add_argument(
        "--plain-detector",
        action="store_true",
        help="D reads the image only (no fixed high-pass residual input); see gcln_fast.commands.demo",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="global batch size")
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--lambda", dest="lam", type=unit_interval, default=0.5, help="weight of L_P in L_G (eq. 3)")
    p.add_argument("--adaptive", action="store_true", help="craft G's training examples through the current G too")
    p.add_argument("--vgg-weights", default=None, help="local vgg19-dcbb9e9d.pth (never downloaded)")
    p.add_argument("--out", required=True, help="output directory (gcln.pt, train_log.csv, history.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/gcln.pt")
    p.add_argument("--force", action="store_true", help="with --resume: continue even if settings changed (recorded)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    prepare_run(args, out="dir")
    import torch

    from ..data import get_dataset
    from ..gcln import train_gcln
    from ..models import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_classifier(args.classifier)
    train_set = get_dataset(
        args.dataset,
        "train",
        root=args.data_root,
        seed=args.seed,
        size=args.train_size if args.dataset == "embedded" else None,
    )
    result = train_gcln(
        classifier,
        train_set,
        out_dir=args.out,
        epochs=args.epochs,
        detector_epochs=args.detector_epochs,
        q=args.q,
        trainable_q=args.trainable_q,
        generator_kwargs={"width": args.width, "qnt_features": args.qnt_features},
        detector_kwargs={"highpass": not args.plain_detector},
        batch_size=args.batch_size,
        lr=args.lr,
        lam=args.lam,
        adaptive=args.adaptive,
        vgg_weights=args.vgg_weights,
        train_size=args.train_size,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
    )
    if os.environ.get("RANK", "0") != "0":
        return 0
    last = [e for e in result["history"]["epochs"] if e["phase"] == 2]
    if last:
        e = last[-1]
        print(
            f"GCLN trained: {result['steps']} G steps; last epoch loss_G {e['loss_g']:.4f} loss_D {e['loss_d']:.4f} "
            f"acc C(G(x*)) {e['acc_recovered']:.3f} acc C(G(x)) {e['acc_clean_through_g']:.3f}"
        )
    print(f"checkpoint: {result['checkpoint']}")
    return 0
