"""``gcln eval``: robustness table of No defence / QNT alone / GCLN rows (and rows with their own
classifier) under oblivious, adaptive and transfer attacks: the per-image worst case beside chance,
accuracy vs eps, and the gradient-masking and broken-defence sanity checks.

Suites: ``standard`` (default; adaptive APGD-CE, APGD-T, Square, PGD-100 through the defence),
``paper`` (the paper's attacks and budgets), ``quick`` (a smoke test)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ._args import checkpoint_arg, nonnegative_float, positive_float, positive_int, prepare_run

CLASSIFIER = checkpoint_arg("classifier", "classifier_train_state")


def add_parser(subparsers, name: str = "eval"):
    p = subparsers.add_parser(
        name,
        help="evaluate defences under oblivious, adaptive and transfer attacks",
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
        "--gcln",
        action="append",
        default=[],
        metavar="PATH",
        help="GCLN checkpoint (repeat for several rows); the row is named GCLN <file stem>, or GCLN <folder> for a run's OUT/gcln.pt",
    )
    p.add_argument(
        "--qnt-steps",
        type=positive_float,
        nargs="*",
        default=[5.0, 10.0],
        help="rows of QuantizedDCT alone (no generator)",
    )
    p.add_argument(
        "--jpeg",
        type=positive_float,
        nargs="*",
        default=[],
        metavar="QUALITY",
        help="rows of JPEG compression alone (gcln_fast.DiffJPEG; Guo et al. 2018's baseline)",
    )
    p.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME=DEFENCE[@CLASSIFIER]",
        help="an extra row: DEFENCE is 'none', 'qnt:Q', 'jpeg:QUALITY' or a GCLN checkpoint; @CLASSIFIER a classifier checkpoint "
        "of its own (e.g. 'PGD-AT=none@runs/at.pt', 'GCLN + fine-tuned C=runs/g/gcln.pt@runs/c_ft.pt')",
    )
    p.add_argument("--out", required=True, help="output directory for results.json, results.md, eps_curve.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    _add_attack_arguments(p)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _add_attack_arguments(p) -> None:
    """The suite, its budgets and overrides, the sweeps, and the attacks of each threat model."""
    from ..attacks import ATTACKS, PRESETS, SURROGATES
    from ..evaluation import BUDGETS, SUITES

    p.add_argument(
        "--suite", choices=SUITES, default=None, help="attacks and budgets (default: standard; paper with --preset)"
    )
    p.add_argument("--budget", choices=BUDGETS, default=None, help="standard suite's budget (default: by --device)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="attack budgets of a named preset")
    p.add_argument("--eps", type=nonnegative_float, default=None, help="override eps, in 1/255 units")
    p.add_argument("--step", type=positive_float, default=None, help="override the BIM/PGD step, in 1/255 units")
    p.add_argument("--steps", type=positive_int, default=None, help="override BIM/PGD iterations")
    p.add_argument("--apgd-steps", type=positive_int, default=None, help="override APGD / APGD-T iterations")
    p.add_argument("--n-target-classes", type=positive_int, default=None, help="override APGD-T's target classes")
    p.add_argument(
        "--square-queries", type=positive_int, default=None, help="override the Square attack's query budget"
    )
    p.add_argument("--cw-steps", type=positive_int, default=None, help="override C&W Adam steps")
    p.add_argument("--eot", type=positive_int, default=None, help="gradient samples per step (for randomised defences)")
    p.add_argument("--restarts", type=positive_int, default=None, help="PGD and APGD restarts")
    p.add_argument("--surrogates", nargs="+", choices=SURROGATES, default=None, help="backward surrogates of QNT")
    p.add_argument(
        "--eps-curve",
        type=nonnegative_float,
        nargs="*",
        default=None,
        help="accuracy vs eps (1/255 units; no values: 1 2 4 8 12 16) under adaptive APGD-CE, plotted",
    )
    p.add_argument("--eps-curve-subset", type=positive_int, default=None, help="images of the eps curve (default: all)")
    p.add_argument("--sanity-subset", type=positive_int, default=64, help="images used by the eps/iteration sweeps")
    p.add_argument(
        "--iter-sweep", type=positive_int, nargs="*", default=None, help="iteration counts of the sanity sweep"
    )
    p.add_argument(
        "--eps-sweep", type=nonnegative_float, nargs="*", default=None, help="radii of the sanity eps sweep (1/255)"
    )
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity sweeps (the other checks still run)")
    p.add_argument("--adaptive", nargs="*", default=None, choices=list(ATTACKS), help="adaptive attacks to run")
    p.add_argument("--oblivious", nargs="*", default=None, choices=list(ATTACKS), help="oblivious attacks to run")
    p.add_argument("--transfer", nargs="*", default=None, choices=list(ATTACKS), help="transfer attacks to run")


def _defence(spec: str, device):
    from torch import nn

    from .. import QuantizedDCT

    if spec.lower() == "none":
        return nn.Identity()
    if spec.lower().startswith("qnt:"):
        return QuantizedDCT(float(spec[4:])).to(device)
    if spec.lower().startswith("jpeg:"):  # Guo et al. (2018)'s JPEG defence, differentiable (BPDA)
        from .. import DiffJPEG

        return DiffJPEG(quality=float(spec[5:])).to(device)
    from ..gcln import load_generator

    return load_generator(spec, map_location=device).to(device)


def build_defences(args) -> dict:
    """The rows: No defence, QNT alone per ``--qnt-steps``, one per ``--gcln``, then every ``--row``."""
    from ..evaluation import Row
    from ..models import load_classifier

    defences = {"No defence": _defence("none", args.device)}
    for q in args.qnt_steps:
        defences[f"QNT q={q:g}"] = _defence(f"qnt:{q}", args.device)
    for quality in args.jpeg:
        defences[f"JPEG Q{quality:g}"] = _defence(f"jpeg:{quality}", args.device)
    for path in args.gcln:
        p = Path(path)  # `gcln train` always writes OUT/gcln.pt: then the run's folder names the row
        name = f"GCLN {p.parent.name if p.stem == 'gcln' and p.parent.name else p.stem}"
        defences[f"GCLN {path}" if name in defences else name] = _defence(path, args.device)
    for spec in args.row:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--row {spec!r}: expected NAME=DEFENCE[@CLASSIFIER]")
        defence, _, clf = rest.partition("@")
        own = load_classifier(clf, map_location=args.device) if clf else None
        defences[name] = Row(_defence(defence, args.device), own)
    return defences


def default_budget(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def suite_from_args(args):
    """The suite of ``--suite``/``--preset`` with every budget override applied."""
    from ..attacks import get_settings
    from ..evaluation import get_suite

    name = args.suite or ("paper" if args.preset else "standard")
    eps = args.eps / 255 if args.eps is not None else None
    suite = get_suite(name, dataset=args.dataset, budget=args.budget or default_budget(args.device), eps=eps)
    s = suite.settings
    if args.preset:
        s = get_settings(args.preset)
        s = s.replace(eps=eps) if eps is not None else s
    changes = {
        field: value
        for field, value in (
            ("step", args.step / 255 if args.step is not None else None),
            ("steps", args.steps),
            ("apgd_steps", args.apgd_steps),
            ("n_target_classes", args.n_target_classes),
            ("square_queries", args.square_queries),
            ("cw_steps", args.cw_steps),
            ("eot", args.eot),
            ("surrogates", tuple(args.surrogates) if args.surrogates else None),
            ("eps_sweep", tuple(e / 255 for e in args.eps_sweep) if args.eps_sweep is not None else None),
            ("iter_sweep", tuple(args.iter_sweep) if args.iter_sweep is not None else None),
        )
        if value is not None
    }
    if args.restarts is not None:
        changes["restarts"] = changes["apgd_restarts"] = args.restarts
    return dataclasses.replace(suite, settings=s.replace(**changes))


def run(args) -> int:
    prepare_run(args, out="dir")
    import torch

    from ..data import as_tensors, get_dataset
    from ..evaluation import evaluate, format_markdown, write_report
    from ..models import load_classifier

    if args.n < 1:
        raise SystemExit("--n must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = suite_from_args(args)
    t0 = time.perf_counter()
    # an image folder is ordered by class: its first --n images would be one class, so draw them (seeded)
    size = args.n if args.dataset == "folder" else None
    ds = get_dataset(args.dataset, args.split, root=args.data_root, seed=args.seed, size=size)
    X, Y = as_tensors(ds, limit=args.n)
    classifier = load_classifier(args.classifier, map_location=args.device)
    substitute = load_classifier(args.substitute, map_location=args.device) if args.substitute else None
    defences = build_defences(args)
    print(
        f"loaded {len(X)} {args.dataset}/{args.split} images and {len(defences)} defence rows in "
        f"{time.perf_counter() - t0:.1f}s; suite {suite.describe()}",
        file=sys.stderr,
    )
    table = evaluate(
        defences,
        classifier,
        substitute,
        X,
        Y,
        suite=suite,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        oblivious=args.oblivious,
        adaptive=args.adaptive,
        transfer=args.transfer,
        sanity=not args.no_sanity,
        sanity_subset=args.sanity_subset,
        eps_curve=[e / 255 for e in args.eps_curve] if args.eps_curve is not None else None,
        eps_curve_subset=args.eps_curve_subset,
        progress=not args.no_progress,
        meta={
            "dataset": args.dataset,
            "split": args.split,
            "classifier": str(args.classifier),
            "substitute": str(args.substitute) if args.substitute else None,
            "gcln": [str(p) for p in args.gcln],
            "rows": list(args.row),
            "preset": args.preset,
        },
    )
    paths = write_report(table, args.out)
    print(format_markdown(table))
    meta = table["meta"]
    print(
        f"suite {meta['suite']}: {meta['seconds_per_100_images']:.1f} s per 100 images per run "
        f"({len(defences)} rows, {meta['threads']} threads, {args.device}; this run {meta['seconds']:.1f} s for "
        f"{meta['n']} images)",
        file=sys.stderr,
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
