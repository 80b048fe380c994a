"""``gcln reproduce``: the paper's CIFAR-10 experiment end to end, sized by a compute budget.

Phases (each skipped when its output exists, so an interrupted run resumes where it stopped):

1. data        -- the train / test images (torchvision's CIFAR-10 files, or an ImageFolder tree),
                  cached as uint8 tensors under OUT/data.
2. classifier  -- train the target classifier C (``resnet20``), or load ``--classifier``.
3. substitute  -- train the black-box substitute (another architecture; named in the table).
4. gcln        -- ``train_gcln`` for each variant of the budget (:mod:`gcln_fast.gcln.presets`).
5. evaluate    -- every row under oblivious, adaptive (BPDA) and transfer attacks, worst case per
                  image, sanity checks (``gcln_fast.evaluation``).
6. figures     -- training curves, accuracy vs eps, Figure 2 (``plots/feature_maps.png``).
7. report      -- the paper's Tables 1-3 with this run's rows beside them (``report.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._args import positive_int, prepare_run
from ._phases import Timer, pct

# "cpu-1h": about an hour on 2 idle CPU cores. Measured (R2 in docs/experiments-gcln.md: a fresh
# clone at 9d9418d, the CIFAR-10 JPEG images as an ImageFolder, this project's idle 2-core machine):
# 52 min 36 s, of which data 36 s, classifiers 1,574 s (C gets a wall-clock budget of 25 minutes, its
# learning-rate schedule following the fraction spent: 12 epochs, 83.4% validation), GCLN 366 s,
# evaluation 1,174 s. "gpu": one GPU (not run yet); "smoke": seconds, for tests.
BUDGETS = {
    "cpu-1h": dict(
        clf_epochs=15, clf_seconds=1500, clf_train=None, sub_arch="small_cnn", sub_epochs=3, sub_seconds=300, gcln_train=4096, gcln_epochs=4,
        g_width=16, g_blocks=2, mix_steps=3, variants=("paper",), eval_n=200, sanity_subset=32,
        suite="paper", extra_adaptive=("apgd-t", "square"), curve_n=100, guard_size=256,
    ),
    "gpu": dict(
        clf_epochs=40, clf_seconds=None, clf_train=None, sub_arch="resnet34", sub_epochs=15, sub_seconds=None, gcln_train=None, gcln_epochs=10,
        g_width=32, g_blocks=2, mix_steps=7, variants=("paper", "adaptive", "finetune"), eval_n=1000,
        sanity_subset=200, suite="standard", extra_adaptive=(), curve_n=500, guard_size=1000,
    ),
    "smoke": dict(
        clf_epochs=1, clf_seconds=None, clf_train=256, sub_arch="small_cnn", sub_epochs=1, sub_seconds=None, gcln_train=128, gcln_epochs=1,
        g_width=8, g_blocks=1, mix_steps=2, variants=("paper",), eval_n=16, sanity_subset=8, suite="quick",
        extra_adaptive=(), curve_n=8, guard_size=32,
    ),
}  # fmt: skip
Q = 10.0
EPS = 8 / 255
EPS_CURVE = tuple(e / 255 for e in (1, 2, 4, 8, 12, 16))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def add_parser(subparsers, name: str = "reproduce"):
    p = subparsers.add_parser(
        name,
        help="the paper's CIFAR-10 experiment end to end (train C, train GCLN, evaluate, tables beside the paper's)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--dataset", choices=("cifar10", "folder"), default="cifar10")
    p.add_argument("--data-root", required=True, help="CIFAR-10 root (cifar-10-batches-py/) or ImageFolder root")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="cpu-1h")
    p.add_argument("--out", default="runs/reproduce", help="output directory (default: runs/reproduce)")
    p.add_argument("--classifier", default=None, help="use this trained classifier instead of training resnet20")
    p.add_argument("--vgg-weights", default=None, help="local vgg19-dcbb9e9d.pth for L_P (never downloaded)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _device(arg):
    import torch

    return torch.device("cuda" if arg == "auto" and torch.cuda.is_available() else ("cpu" if arg == "auto" else arg))


def load_data(args, out: Path, budget: dict):
    """(train dataset for C, X train float, Y train, X test float, Y test) from the cached uint8 tensors."""
    import numpy as np

    from ..data import ArrayDataset, as_uint8_tensors, get_dataset
    from ._phases import cached_images

    splits = {}
    for split in ("train", "test"):
        load = lambda s=split: as_uint8_tensors(get_dataset(args.dataset, s, root=args.data_root))  # noqa: E731
        splits[split] = cached_images(out / "data" / f"{split}.pt", load)
    rng = np.random.default_rng(args.seed)  # an ImageFolder tree is ordered by class: shuffle once
    Xu, Y = splits["train"]
    perm = rng.permutation(len(Y))
    Xu, Y = Xu[perm], Y[perm]
    if budget["clf_train"]:
        Xu, Y = Xu[: budget["clf_train"]], Y[: budget["clf_train"]]
    train = ArrayDataset(Xu.numpy(), Y.numpy(), name="cifar10", split="train")
    train.allows_hflip = True  # CIFAR-10 images, also as an ImageFolder: flips keep the label
    Xt, Yt = splits["test"]
    perm = rng.permutation(len(Yt))
    Xt, Yt = Xt[perm], Yt[perm]
    print(f"train {len(Y)} images, test {len(Yt)}")
    return train, Xu.float() / 255, Y, Xt.float() / 255, Yt


def train_classifiers(args, out: Path, budget: dict, train, Xt, Yt, progress: bool):
    """(C, substitute S); C is ``--classifier`` when given. Validation: 1000 test images outside the evaluation set."""
    from ..data import ArrayDataset
    from ..models import load_classifier
    from ._phases import train_or_load_classifier

    n = budget["eval_n"]
    val_x = (Xt[n : n + 1000] * 255).round().to(dtype=__import__("torch").uint8).numpy()
    val = ArrayDataset(val_x, Yt[n : n + 1000].numpy(), name="cifar10", split="test")
    device = str(_device(args.device))
    common = dict(progress=progress, device=device)
    if args.classifier:
        C = load_classifier(args.classifier, map_location=device)
        print(f"classifier: {args.classifier} ({C.arch})")
    else:
        C = train_or_load_classifier(
            out / "classifier.pt", "resnet20", train, val, epochs=budget["clf_epochs"], lr=0.1,
            optimizer="sgd", seed=args.seed, time_budget=budget["clf_seconds"], **common,
        )  # fmt: skip
    S = train_or_load_classifier(
        out / "substitute.pt", budget["sub_arch"], train, val, epochs=budget["sub_epochs"],
        lr=0.1 if budget["sub_arch"] != "small_cnn" else 0.05, optimizer="sgd", seed=args.seed + 101,
        time_budget=budget["sub_seconds"], **common,
    )  # fmt: skip
    return C.eval(), S.eval()


def train_variants(args, out: Path, budget: dict, C, X, Y, progress: bool) -> dict:
    """``{variant: train_gcln result}`` for the budget's variants (each resumes from its checkpoint)."""
    from ..gcln import train_gcln
    from ..gcln.presets import training_attacks, variant

    n = budget["gcln_train"] or len(Y)
    results = {}
    for name in budget["variants"]:
        results[name] = train_gcln(
            C,
            (X[:n], Y[:n]),
            out_dir=out / "gcln" / name,
            epochs=budget["gcln_epochs"],
            q=Q,
            generator_kwargs={"width": budget["g_width"], "blocks": budget["g_blocks"]},
            attack_mix=training_attacks(name, EPS, steps=budget["mix_steps"]),
            guard_size=budget["guard_size"],
            vgg_weights=args.vgg_weights,
            device=args.device,
            seed=args.seed,
            resume=True,
            progress=progress,
            **variant(name),
        )
    return results


def defence_rows(C, gclns: dict):
    """``[(row name, defence, classifier)]``: No defence, QNT alone, then each GCLN variant."""
    from torch import nn

    from .. import QuantizedDCT
    from ..gcln.presets import LABELS

    rows = [("No defence", nn.Identity(), C), (f"QNT alone (q={Q:g})", QuantizedDCT(Q).eval(), C)]
    for name, res in gclns.items():
        rows.append((f"{LABELS[name]} (q={Q:g})", res["generator"].eval(), res["classifier"].eval()))
    return rows


def evaluate_all(out: Path, budget: dict, rows, S, Xe, Ye, *, seed: int, progress: bool, meta: dict) -> dict:
    """The evaluation table (``OUT/eval``), computed once: the budget's suite at 8/255 (``paper``: the
    paper's attacks and budgets, for its tables, here with APGD-T and Square added to the adaptive
    attacks; ``standard``: AutoAttack strength), and accuracy vs eps."""
    from ..evaluation import evaluate, get_suite, write_report

    path = out / "eval" / "results.json"
    if path.is_file():
        print(f"{path} exists: skipped")
        return json.loads(path.read_text())
    device = "cuda" if any(p.is_cuda for _, _, c in rows for p in c.parameters()) else "cpu"
    suite = get_suite(budget["suite"], dataset="cifar10", budget="gpu" if device == "cuda" else "cpu")
    table = evaluate(
        {name: (d, c) for name, d, c in rows}, None, S, Xe, Ye, suite=suite,
        adaptive=tuple(dict.fromkeys(suite.adaptive + budget["extra_adaptive"])),
        eps_curve=EPS_CURVE, eps_curve_subset=budget["curve_n"], sanity_subset=budget["sanity_subset"], seed=seed,
        progress=progress, meta=meta,
    )  # fmt: skip
    write_report(table, out / "eval")
    return table


def figures(out: Path, gclns: dict, C, Xe, Ye, class_names) -> None:
    """Training curves per variant and Figure 2 for three test images (accuracy vs eps: OUT/eval)."""
    import torch

    from ..attacks import pgd
    from ..gcln import plots
    from ..gcln.feature_maps import feature_maps_figure

    pdir = out / "plots"
    for name, res in gclns.items():
        plots.plot_training(res["history"], pdir, name=f"gcln_training_{name}")
    G = next(iter(gclns.values()))["generator"]
    x, y = Xe[:3], Ye[:3]
    torch.manual_seed(0)
    xa = pgd(C, x, y, eps=16 / 255, step=2 / 255, steps=10)  # the paper's Figure 2: PGD at 16/255
    with torch.no_grad():
        cleaned = G(xa)
    feature_maps_figure(
        C, x, xa, cleaned, y, pdir / "feature_maps.png", class_names=class_names,
        title=f"clean / PGD eps 16/255 on C / cleaned by GCLN (q={Q:g}): feature map and Grad-CAM of C",
    )  # fmt: skip


def report(out: Path, table: dict, gclns: dict, timer: Timer, *, budget_name: str, substitute_arch: str) -> str:
    """``OUT/report.md`` (+ ``summary.json``): the paper's tables beside ours, training curves' last epochs, wall time."""
    from ..utils.io import atomic_write_json, atomic_write_text
    from .paper_tables import beside_paper

    perceptual = ", ".join(sorted({str(r.get("perceptual", "?")) for r in gclns.values()}))
    note = {"vgg19": "VGG-19 (ImageNet weights), as in the paper"}.get(
        perceptual, f"{perceptual}: the target classifier's own features (no VGG-19 weights on disk), not the paper's"
    )
    lines = [
        f"# gcln reproduce ({budget_name})",
        "",
        beside_paper(table, substitute_arch=substitute_arch, perceptual=note),
    ]
    lines += ["### GCLN training (last epoch; guard = clean accuracy through G on held-out training images)", ""]
    for name, res in gclns.items():
        e = [x for x in res["history"]["epochs"] if x.get("phase") == 2]
        if e:
            e = e[-1]
            lines.append(
                f"- {name}: {res['steps']} G steps, D accuracy {pct(e['d_acc'])}, C(G(x)) on train batches "
                f"{pct(e['acc_clean_through_g'])}, guard {pct(e.get('guard_acc_through_g'))}, "
                f"guard events {len(res['history'].get('guard', [])) - 1}, stopped by guard: {res['stopped_by_guard']}"
            )
    for f in ("classifier", "substitute"):
        h = out / f"{f}.history.json"
        if h.is_file():
            hist = json.loads(h.read_text())
            lines.append(
                f"- {f} ({hist.get('config', {}).get('arch')}): {hist.get('train_seconds', 0):.0f} s of training, "
                f"{len(hist.get('epochs', []))} epochs, validation accuracy {pct(hist.get('final_val_acc'))}"
            )
    lines += ["", "Wall time per phase of this invocation (a phase whose output existed took ~0 s): "]
    lines[-1] += ", ".join(f"{k} {v:.0f} s" for k, v in timer.times.items())
    lines.append("")
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    summary = {"budget": budget_name, "wall_seconds": timer.times, "rows": table["rows"], "perceptual": perceptual}
    atomic_write_json(out / "summary.json", summary)
    return text


def run(args: argparse.Namespace) -> int:
    prepare_run(args, out="dir")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    budget, out, progress = BUDGETS[args.budget], Path(args.out), not args.no_progress
    out.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    print(f"gcln reproduce --budget {args.budget} --dataset {args.dataset} -> {out}; threads {torch.get_num_threads()}")
    with timer.phase("data"):
        train, X, Y, Xt, Yt = load_data(args, out, budget)
    with timer.phase("classifiers"):
        C, S = train_classifiers(args, out, budget, train, Xt, Yt, progress)
    Xe, Ye = Xt[: budget["eval_n"]], Yt[: budget["eval_n"]]
    with timer.phase("gcln"):
        gclns = train_variants(args, out, budget, C, X, Y, progress)
    rows = defence_rows(C, gclns)
    meta = {"dataset": args.dataset, "budget": args.budget, "substitute": S.arch, "classifier": C.arch}
    with timer.phase("evaluate"):
        table = evaluate_all(out, budget, rows, S, Xe, Ye, seed=args.seed, progress=progress, meta=meta)
    with timer.phase("figures"):
        figures(out, gclns, C, Xe, Ye, CIFAR10_CLASSES)
    timer.total()
    print("\n" + report(out, table, gclns, timer, budget_name=args.budget, substitute_arch=S.arch))
    return 0
