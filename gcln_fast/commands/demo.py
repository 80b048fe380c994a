"""``gcln demo``: the whole GCLN pipeline end to end on the embedded dataset, on a CPU.

Phases (each skipped when its output exists, so an interrupted demo resumes):

1. data        -- render the embedded house-number set (train / test splits).
2. classifier  -- train the target classifier C (``small_cnn``).
3. substitute  -- train the black-box substitute S: ``small_cnn`` again, but with another
                  seed, fewer epochs and SGD instead of AdamW (``build_classifier`` has one small
                  CNN; a different architecture would be a ResNet, too slow for this budget).
                  S is only used to craft transfer (black-box) attacks.
4. attack      -- white-box PGD / FGSM on C for the evaluation images (oblivious examples; kept
                  for the quality bar and the image grid).
5. gcln        -- ``train_gcln``: D alone, then G against D (oblivious training examples).
                  The demo's D reads the plain image (``highpass=False``): in a validation run
                  (192 G steps, 200 test images outside the evaluation set) G reached 30%
                  oblivious-PGD accuracy with it and 9% with the high-pass D, which learns to
                  detect faster and so pulls G towards fooling D rather than restoring content
                  within this short budget.
6. evaluate    -- ``gcln_fast.evaluation.evaluate`` + ``write_report`` for No defence, QNT alone
                  and GCLN: oblivious white-box, adaptive BPDA, black-box (transfer from S).
7. plots       -- training curves, accuracy vs q and vs BPDA iterations, the image grid.

The quality bar printed at the end is measured on the held-out evaluation images: GCLN's
accuracy under *oblivious* PGD against No defence's, and clean accuracies. The adaptive
(BPDA) and black-box numbers are printed beside it whatever they are.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._args import positive_int, prepare_run

# Settings. "full" is sized for <= 15 minutes on an idle 2-core CPU; "fast" for a smoke run.
PROFILES = {
    "full": dict(
        train_size=20000,
        test_size=1000,
        eval_n=300,
        clf_epochs=5,
        sub_epochs=3,
        gcln_train=4096,
        gcln_epochs=10,
        plot_n=200,
        iter_n=100,
        q_n=200,
        batch_size=64,
        oblivious=("fgsm", "pgd", "bim", "cw"),
        adaptive=("fgsm", "pgd", "bim", "cw", "apgd-ce"),
        transfer=("fgsm", "pgd"),
        sanity_subset=32,
    ),
    "fast": dict(
        train_size=4000,
        test_size=400,
        eval_n=200,
        clf_epochs=2,
        sub_epochs=1,
        gcln_train=1024,
        gcln_epochs=1,
        plot_n=64,
        iter_n=32,
        q_n=64,
        batch_size=64,
        oblivious=("fgsm", "pgd"),
        adaptive=("fgsm", "pgd"),
        transfer=("pgd",),
        sanity_subset=16,
    ),
}
DEMO_ATTACK_MIX = (
    {"attack": "pgd", "eps": 12 / 255, "step": 3 / 255, "steps": 5},
    {"attack": "pgd", "eps": 8 / 255, "step": 2 / 255, "steps": 5},
    {"attack": "pgd", "eps": 4 / 255, "step": 1 / 255, "steps": 5},
    {"attack": "fgsm", "eps": 12 / 255},
)
Q = 10.0


def add_parser(subparsers, name: str = "demo"):
    p = subparsers.add_parser(
        name, help="end-to-end GCLN demo on the embedded dataset (CPU, resumable)", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--fast", action="store_true", help="a much smaller smoke run (numbers not meaningful)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice; on a CPU shared with other jobs 1 is often faster)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


class _Timer:
    def __init__(self):
        self.times = {}

    def phase(self, name):
        timer = self

        class _P:
            def __enter__(self):
                self.t0 = time.time()
                print(f"\n== {name} ==", flush=True)

            def __exit__(self, *exc):
                timer.times[name] = time.time() - self.t0
                print(f"-- {name}: {timer.times[name]:.1f} s", flush=True)

        return _P()


def _fmt(v):
    return "—" if v is None else f"{100 * v:.1f}%"


def run(args: argparse.Namespace) -> int:
    prepare_run(args, out="dir")
    import torch
    from torch import nn

    from .. import QuantizedDCT
    from ..attacks import PRESETS, craft
    from ..data import as_tensors, get_dataset
    from ..evaluation import evaluate, write_report
    from ..gcln import load_generator, plots, train_gcln
    from ..models import build_classifier, load_classifier
    from ..training.classifier import train_classifier
    from ..utils.checkpoint import atomic_save, load_checkpoint
    from ..utils.metrics import accuracy as _acc

    t_all = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = PROFILES["fast" if args.fast else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    settings = PRESETS["embedded"]  # eps 12/255, step 3/255, 10 iterations (SVHN budget of the paper)
    timer = _Timer()
    print(
        f"gcln demo ({'fast' if args.fast else 'full'} profile) -> {out}; threads {torch.get_num_threads()}; "
        f"attack settings: eps {settings.eps * 255:.0f}/255, step {settings.step * 255:.0f}/255, {settings.steps} steps"
    )

    with timer.phase("data"):
        root = out / "data"
        train_set = get_dataset("embedded", "train", root=root, size=prof["train_size"], seed=args.seed)
        test_set = get_dataset("embedded", "test", root=root, size=prof["test_size"], seed=args.seed)
        X, Y = as_tensors(train_set)
        Xt, Yt = as_tensors(test_set)
        Xe, Ye = Xt[: prof["eval_n"]], Yt[: prof["eval_n"]]
        print(f"train {len(Y)} images, test {len(Yt)} (evaluation on the first {len(Ye)})")

    def train_clf(path: Path, subset, epochs, seed, optimizer, lr):
        if path.is_file():
            print(f"{path} exists: skipped")
            return load_classifier(path)
        torch.manual_seed(seed)
        model = build_classifier("small_cnn", 10)
        hist = train_classifier(
            model,
            subset,
            test_set,
            epochs=epochs,
            batch_size=128,
            lr=lr,
            optimizer=optimizer,
            device="cpu",
            checkpoint_path=path.with_suffix(".state.pt"),
            final_path=path,
            resume=True,
            seed=seed,
            progress=progress,
        )
        print(f"val accuracy {hist['final_val_acc']:.3f}")
        return load_classifier(path)

    with timer.phase("classifier"):
        C = train_clf(out / "classifier.pt", train_set, prof["clf_epochs"], args.seed, "adamw", 3e-3)
    with timer.phase("substitute"):
        S = train_clf(out / "substitute.pt", train_set, prof["sub_epochs"], args.seed + 101, "sgd", 0.05)

    with timer.phase("attack"):
        adv_path = out / "attacks.pt"
        if adv_path.is_file():
            adv = load_checkpoint(adv_path)
            print(f"{adv_path} exists: skipped")
        else:
            gen = torch.Generator().manual_seed(args.seed)
            adv = {
                name: craft("oblivious", name, Xe, Ye, classifier=C, settings=settings, generator=gen)
                for name in ("pgd", "fgsm")
            }
            atomic_save(adv, adv_path)
        print(
            f"C: clean {_fmt(_acc(C, Xe, Ye))}, white-box FGSM {_fmt(_acc(C, adv['fgsm'], Ye))}, PGD {_fmt(_acc(C, adv['pgd'], Ye))}"
        )

    with timer.phase("gcln"):
        res = train_gcln(
            C,
            (X[: prof["gcln_train"]], Y[: prof["gcln_train"]]),
            out_dir=out / "gcln",
            epochs=prof["gcln_epochs"],
            detector_epochs=1,
            q=Q,
            generator_kwargs={"width": 16, "blocks": 1},
            detector_kwargs={"width": 16, "highpass": False},
            batch_size=prof["batch_size"],
            lr=2e-3,
            attack_mix=DEMO_ATTACK_MIX,
            device="cpu",
            seed=args.seed,
            resume=True,
            progress=progress,
        )
        G = load_generator(out / "gcln" / "gcln.pt")
        history = res["history"]

    defences = {"No defence": nn.Identity(), f"QNT alone (q={Q:g})": QuantizedDCT(Q).eval(), f"GCLN (q={Q:g})": G}
    quality = {}
    for name, d in defences.items():
        m = nn.Sequential(d, C).eval()
        quality[name] = {
            "clean": _acc(m, Xe, Ye),
            "oblivious_pgd": _acc(m, adv["pgd"], Ye),
            "oblivious_fgsm": _acc(m, adv["fgsm"], Ye),
        }

    report_md = None
    with timer.phase("evaluate"):
        eval_dir = out / "eval"
        done = sorted(eval_dir.glob("*.md")) if eval_dir.is_dir() else []
        if not done:
            table = evaluate(
                defences,
                C,
                S,
                Xe,
                Ye,
                settings=settings,
                oblivious=prof["oblivious"],
                adaptive=prof["adaptive"],
                transfer=prof["transfer"],
                sanity_subset=prof["sanity_subset"],
                seed=args.seed,
                progress=progress,
                meta={"demo": "gcln demo", "profile": "fast" if args.fast else "full"},
            )
            write_report(table, eval_dir)
            done = sorted(eval_dir.glob("*.md"))
        else:
            print(f"{eval_dir} has a report: skipped")
        report_md = "\n\n".join(p.read_text() for p in done)

    with timer.phase("plots"):
        pdir = out / "plots"
        plots.plot_training(history, pdir)
        n = prof["plot_n"]
        xa = adv["pgd"][:8]
        with torch.no_grad():
            plots.image_grid(
                Xe[:8],
                xa,
                G(xa),
                pdir / "cleaning_grid.png",
                labels=Ye[:8],
                classifier=C,
                title=f"clean / white-box PGD eps {settings.eps * 255:.0f}/255 on C / cleaned by GCLN (q={Q:g})",
            )
        if not (pdir / "accuracy_vs_q.json").is_file():
            plots.accuracy_vs_q(
                C,
                Xe[: prof["q_n"]],
                Ye[: prof["q_n"]],
                qs=(2, 5, 10, 15, 20),
                generators={Q: G},
                eps=8 / 255,
                step=1 / 255,
                iterations=10,
                out_dir=pdir,
            )
        if not (pdir / "accuracy_vs_bpda_iterations.json").is_file():
            plots.accuracy_vs_iterations(
                {"No defence": None, f"QNT alone (q={Q:g})": QuantizedDCT(Q), f"GCLN (q={Q:g})": G},
                C,
                Xe[: prof["iter_n"]],
                Ye[: prof["iter_n"]],
                out_dir=pdir,
            )
        del n
        print("plots:", ", ".join(sorted(p.name for p in pdir.glob("*.png"))))

    # ------------------------------------------------------------------ tables
    print("\n" + "=" * 78)
    if report_md:
        print(report_md)
    print(
        "\nQuality bar (oblivious white-box: attacks crafted on C alone; "
        f"{len(Ye)} held-out images, eps {settings.eps * 255:.0f}/255):\n"
    )
    print("| defence | clean | FGSM (oblivious) | PGD-10 (oblivious) |")
    print("|---|---|---|---|")
    for name, r in quality.items():
        print(f"| {name} | {_fmt(r['clean'])} | {_fmt(r['oblivious_fgsm'])} | {_fmt(r['oblivious_pgd'])} |")
    g, nd = quality[f"GCLN (q={Q:g})"], quality["No defence"]
    gain = 100 * (g["oblivious_pgd"] - nd["oblivious_pgd"])
    drop = 100 * (nd["clean"] - g["clean"])
    ok = gain >= 40 and drop <= 3
    print(
        f"\nGCLN vs No defence: oblivious PGD {gain:+.1f} points (bar: >= +40), clean {-drop:+.1f} points (bar: >= -3): "
        f"{'MET' if ok else 'NOT MET'}"
    )
    it = json.loads((out / "plots" / "accuracy_vs_bpda_iterations.json").read_text())
    gname = f"GCLN (q={Q:g})"
    print(
        f"Adaptive BPDA-PGD (eps 8/255, step 1/255, {len(it['accuracy'][gname]) and it['n']} images): GCLN "
        + ", ".join(
            f"{k} it {_fmt(v)}"
            for k, v in zip(it["iterations"], it["accuracy"][gname], strict=True)
            if k in (10, 50, 100)
        )
        + f"; No defence at 10 it {_fmt(it['accuracy']['No defence'][0])}"
    )
    timer.times["total"] = time.time() - t_all
    print("\nWall time per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in timer.times.items()))
    summary = {
        "profile": "fast" if args.fast else "full",
        "settings": settings.to_dict(),
        "quality": quality,
        "quality_bar_met": ok,
        "oblivious_pgd_gain_points": gain,
        "clean_drop_points": drop,
        "wall_seconds": timer.times,
        "threads": torch.get_num_threads(),
        "profile_settings": prof,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    return 0
