"""``gcln eval``: robustness table of No defence / QNT alone / GCLN rows under oblivious, adaptive
(BPDA) and transfer attacks, with the per-image worst case and the gradient-masking sanity checks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._args import checkpoint_arg, nonnegative_float, positive_float, positive_int, prepare_run

CLASSIFIER = checkpoint_arg("classifier", "classifier_train_state")

DATASET_PRESET = {"cifar10": "cifar10", "svhn": "svhn", "embedded": "embedded", "folder": "cifar10"}


def add_parser(subparsers, name: str = "eval"):
    from ..attacks import ATTACKS, PRESETS

    p = subparsers.add_parser(
        name,
        help="evaluate defences under oblivious, adaptive (BPDA) and transfer attacks",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--classifier", required=True, type=CLASSIFIER, help="classifier checkpoint (gcln_fast.models.save_classifier)"
    )
    p.add_argument(
        "--substitute",
        type=CLASSIFIER,
        default=None,
        help="substitute classifier for the black-box transfer attacks (omit: skipped)",
    )
    p.add_argument("--dataset", choices=["embedded", "cifar10", "svhn", "folder"], default="embedded")
    p.add_argument("--data-root", default=None, help="dataset directory (required for 'folder')")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=positive_int, default=1000, help="number of test images")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument(
        "--gcln", action="append", default=[], metavar="PATH", help="GCLN checkpoint (repeat for several rows)"
    )
    p.add_argument(
        "--qnt-steps",
        type=positive_float,
        nargs="*",
        default=[5.0, 10.0],
        help="rows of QuantizedDCT alone (no generator)",
    )
    p.add_argument("--out", required=True, help="output directory for results.json and results.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="attack budgets (default: by dataset)")
    p.add_argument("--eps", type=nonnegative_float, default=None, help="override eps, in 1/255 units")
    p.add_argument("--steps", type=positive_int, default=None, help="override BIM/PGD iterations")
    p.add_argument("--apgd-steps", type=positive_int, default=None, help="override APGD iterations")
    p.add_argument("--cw-steps", type=positive_int, default=None, help="override C&W Adam steps")
    p.add_argument("--eot", type=positive_int, default=None, help="gradient samples per step (for randomised defences)")
    p.add_argument("--restarts", type=positive_int, default=None, help="PGD and APGD restarts")
    p.add_argument("--sanity-subset", type=positive_int, default=64, help="images used by the eps/iteration sweeps")
    p.add_argument(
        "--iter-sweep",
        type=positive_int,
        nargs="*",
        default=None,
        help="iteration counts of the sanity sweep (default 10 20 50 100)",
    )
    p.add_argument(
        "--eps-sweep",
        type=nonnegative_float,
        nargs="*",
        default=None,
        help="radii of the sanity eps sweep, in 1/255 units (default 8 16 32 64)",
    )
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity sweeps and checks")
    p.add_argument("--adaptive", nargs="*", default=None, choices=list(ATTACKS), help="adaptive attacks to run")
    p.add_argument("--oblivious", nargs="*", default=None, choices=list(ATTACKS), help="oblivious attacks to run")
    p.add_argument("--transfer", nargs="*", default=None, choices=list(ATTACKS), help="transfer attacks to run")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def build_defences(args) -> dict:
    from torch import nn

    from .. import QuantizedDCT

    defences = {"No defence": nn.Identity()}
    for q in args.qnt_steps:
        defences[f"QNT q={q:g}"] = QuantizedDCT(q).to(args.device)
    if args.gcln:
        from ..gcln import load_generator

        for path in args.gcln:
            name = f"GCLN {Path(path).stem}"
            if name in defences:
                name = f"GCLN {path}"
            defences[name] = load_generator(path, map_location=args.device).to(args.device)
    return defences


def settings_from_args(args):
    from ..attacks import get_settings

    s = get_settings(args.preset or DATASET_PRESET[args.dataset])
    changes = {}
    if args.eps is not None:
        changes["eps"] = args.eps / 255
    for field, value in (
        ("steps", args.steps),
        ("apgd_steps", args.apgd_steps),
        ("cw_steps", args.cw_steps),
        ("eot", args.eot),
    ):
        if value is not None:
            changes[field] = value
    if args.restarts is not None:
        changes["restarts"] = changes["apgd_restarts"] = args.restarts
    if args.eps_sweep is not None:
        changes["eps_sweep"] = tuple(e / 255 for e in args.eps_sweep)
    if args.iter_sweep is not None:
        changes["iter_sweep"] = tuple(args.iter_sweep)
    return s.replace(**changes) if changes else s


def run(args) -> int:
    prepare_run(args, out="dir")
    import torch

    from ..data import as_tensors, get_dataset
    from ..evaluation import (
        DEFAULT_ADAPTIVE,
        DEFAULT_OBLIVIOUS,
        DEFAULT_TRANSFER,
        evaluate,
        format_markdown,
        write_report,
    )
    from ..models import load_classifier

    if args.n < 1:
        raise SystemExit("--n must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    t0 = time.perf_counter()
    ds = get_dataset(args.dataset, args.split, root=args.data_root, seed=args.seed)
    X, Y = as_tensors(ds, limit=args.n)
    classifier = load_classifier(args.classifier, map_location=args.device)
    substitute = load_classifier(args.substitute, map_location=args.device) if args.substitute else None
    defences = build_defences(args)
    print(
        f"loaded {len(X)} {args.dataset}/{args.split} images and {len(defences)} defence rows in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    table = evaluate(
        defences,
        classifier,
        substitute,
        X,
        Y,
        settings=settings,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        oblivious=args.oblivious if args.oblivious is not None else DEFAULT_OBLIVIOUS,
        adaptive=args.adaptive if args.adaptive is not None else DEFAULT_ADAPTIVE,
        transfer=args.transfer if args.transfer is not None else DEFAULT_TRANSFER,
        sanity=not args.no_sanity,
        sanity_subset=args.sanity_subset,
        progress=not args.no_progress,
        meta={
            "dataset": args.dataset,
            "split": args.split,
            "classifier": str(args.classifier),
            "substitute": str(args.substitute) if args.substitute else None,
            "gcln": [str(p) for p in args.gcln],
            "preset": args.preset or DATASET_PRESET[args.dataset],
        },
    )
    paths = write_report(table, args.out)
    print(format_markdown(table))
    print(f"wrote {paths['json']} and {paths['markdown']}", file=sys.stderr)
    return 0
