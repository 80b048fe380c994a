"""``gcln train``: train the GCLN generator and detector against a saved classifier."""

from __future__ import annotations

import argparse
import os

from ._args import (
    checkpoint_arg,
    device_arg,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_run,
    unit_interval,
)
from ._phases import save_finetuned_classifier


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
    p.add_argument(
        "--variant",
        choices=("paper", "adaptive", "finetune", "no-la"),
        default="paper",
        help="a named training variant (gcln_fast.gcln.presets); the flags below override its settings",
    )
    p.add_argument(
        "--lambda", dest="lam", type=unit_interval, default=None, help="weight of L_P in L_G (eq. 3; default 0.5)"
    )
    p.add_argument(
        "--adaptive",
        type=unit_interval,
        nargs="?",
        const=1.0,
        default=None,
        help="share of each batch crafted through the current G and C (BPDA); bare flag: 1",
    )
    _add_training_knobs(p)
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


# flags whose default is train_gcln's own (None here: not passed), so the defaults live in one place
KNOBS = {
    "adaptive_ramp": (unit_interval, "share of the G steps over which the adaptive share rises from 0"),
    "eps_ramp": (
        unit_interval,
        "share of the G steps over which the attacks' radius grows from 0 (adversarial-training ramp)",
    ),
    "mu": (nonnegative_float, "weight of the cross-entropy term L_CE of C(G(x)) (0: the paper's loss)"),
    "beta": (nonnegative_float, "weight of the TRADES term KL(C(G(x)) || C(G(x*)))"),
    "lr": (positive_float, "learning rate of G (default: train_gcln's)"),
    "lr_d": (positive_float, "learning rate of D (default: the rate of G)"),
    "lr_c": (positive_float, "learning rate of the fine-tuned C"),
    "adv_warmup": (unit_interval, "share of the G steps over which L_A's weight ramps up from 0"),
    "buffer_fraction": (unit_interval, "share of on-the-fly clean samples in D's clean batch"),
    "guard_size": (nonnegative_int, "held-out training images of the divergence guard (0: none)"),
    "guard_margin": (unit_interval, "clean-accuracy drop through G that trips the guard"),
    "detector_epochs": (nonnegative_int, "phase 1 epochs (detector alone)"),
}


def _add_training_knobs(p) -> None:
    for name, (kind, help_text) in KNOBS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_text)
    p.add_argument(
        "--guard-action", choices=("backoff", "stop", "warn"), default=None, help="what a tripped guard does"
    )
    p.add_argument("--finetune-classifier", action="store_true", help="fine-tune a copy of C jointly (needs --mu)")
    p.add_argument(
        "--clean-pass", action=argparse.BooleanOptionalAction, default=None,
        help="train G (and C) also on the clean images of each batch (default: the variant's)",
    )  # fmt: skip
    p.add_argument(
        "--lr-decay", action=argparse.BooleanOptionalAction, default=None,
        help="cosine decay of G's and C's learning rates to 1%% over the G steps (default: the variant's)",
    )  # fmt: skip
    p.add_argument("--no-spectral-norm", action="store_true", help="D without spectral normalisation")
    p.add_argument(
        "--perceptual", choices=("auto", "vgg19", "classifier", "pixel"), default="auto", help="L_P's feature network"
    )


def _knob_kwargs(args) -> dict:
    from ..gcln.presets import variant

    given = (*KNOBS, "guard_action", "adaptive", "lam", "clean_pass", "lr_decay")
    kw = variant(args.variant, **{k: getattr(args, k) for k in given if getattr(args, k) is not None})
    if args.finetune_classifier:
        kw["finetune_classifier"] = True
    return kw


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
        q=args.q,
        trainable_q=args.trainable_q,
        generator_kwargs={"width": args.width, "qnt_features": args.qnt_features},
        detector_kwargs={"highpass": not args.plain_detector, "spectral_norm": not args.no_spectral_norm},
        batch_size=args.batch_size,
        perceptual=args.perceptual,
        vgg_weights=args.vgg_weights,
        train_size=args.train_size,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        **_knob_kwargs(args),
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
    path = save_finetuned_classifier(result, classifier, args.out)
    if path is not None:
        print(f"fine-tuned classifier: {path} (gcln eval --row 'NAME={result['checkpoint']}@{path}')")
    return 0
