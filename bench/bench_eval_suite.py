"""Wall time of the standard evaluation suite per 100 images, beside AutoAttack's own runtime on the
same model and images (the reference a robustness researcher knows).

Not a test: run it on an idle machine, e.g. after ``gcln demo --out runs/demo``:

    python bench/bench_eval_suite.py --run runs/demo --n 100 --threads 2

For each row (No defence, GCLN) it times ``evaluate(suite="standard")`` (oblivious + adaptive attacks
and the checks from the table's own numbers; no substitute, no sanity sweeps) and then
``torchattacks.AutoAttack(version="standard")`` (APGD-CE, APGD-T, FAB-T, Square-5000) on
``nn.Sequential(defence, classifier)``, and reports both robust accuracies. AutoAttack is skipped
when torchattacks is not installed. Results: Markdown on stdout, JSON + Markdown under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", default="runs/demo", help="a `gcln demo --out` folder (classifier.pt, gcln/paper/gcln.pt, data/)"
    )
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: RUN/classifier.pt)")
    p.add_argument("--gcln", default=None, help="GCLN checkpoint (default: RUN/gcln/paper/gcln.pt; 'none' to skip)")
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--data-root", default=None, help="dataset directory (default: RUN/data)")
    p.add_argument("--n", type=int, default=100, help="test images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--budget", choices=["cpu", "gpu"], default=None, help="standard suite budget (default: by device)")
    p.add_argument("--eps", type=float, default=8.0, help="in 1/255 units")
    p.add_argument("--skip-autoattack", action="store_true")
    p.add_argument("--out", default="results", help="folder for bench_eval_suite.json / .md")
    return p.parse_args(argv)


def load(args):
    from gcln_fast.data import as_tensors, get_dataset
    from gcln_fast.gcln import load_generator
    from gcln_fast.models import load_classifier

    run = Path(args.run)
    C = load_classifier(args.classifier or run / "classifier.pt", map_location=args.device).eval()
    rows = {"No defence": nn.Identity()}
    gcln = args.gcln or run / "gcln" / "paper" / "gcln.pt"
    if str(gcln) != "none":
        rows["GCLN"] = load_generator(gcln, map_location=args.device).eval()
    root = args.data_root or (run / "data" if (run / "data").is_dir() else None)
    X, Y = as_tensors(get_dataset(args.dataset, "test", root=root), limit=args.n)
    return C, rows, X, Y


def time_suite(name, defence, C, X, Y, args) -> dict:
    from gcln_fast.evaluation import evaluate, get_suite

    suite = get_suite("standard", budget=args.budget or ("gpu" if args.device == "cuda" else "cpu"), eps=args.eps / 255)
    t0 = time.perf_counter()
    table = evaluate({name: defence}, C, None, X, Y, suite=suite, sanity=False, device=args.device, progress=True)
    seconds = time.perf_counter() - t0
    r = table["rows"][name]
    return {
        "suite": suite.describe(),
        "seconds": seconds,
        "seconds_per_100_images": 100 * seconds / len(X),
        "worst_case": r["worst_case"],
        "adaptive": r["adaptive"],
        "clean": r["clean"],
    }


def time_autoattack(defence, C, X, Y, args) -> dict | None:
    try:
        import torchattacks
    except ImportError:
        print("torchattacks not importable: AutoAttack skipped", file=sys.stderr)
        return None
    model = nn.Sequential(defence, C).eval()
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps / 255, version="standard", n_classes=10, seed=0)
    t0 = time.perf_counter()
    adv = attack(X.to(args.device), Y.to(args.device))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(adv).argmax(1).cpu() == Y).float().mean())
    return {"seconds": seconds, "seconds_per_100_images": 100 * seconds / len(X), "robust_accuracy": acc}


def markdown(results: dict, meta: dict) -> str:
    lines = [
        f"Standard suite vs AutoAttack (standard), eps {meta['eps']:g}/255, {meta['n']} images, "
        f"{meta['threads']} threads, {meta['device']}, torch {meta['torch']}",
        "",
        "| row | clean | suite worst case | suite s / 100 images | AutoAttack robust acc. | AutoAttack s / 100 images |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        s, a = r["suite"], r.get("autoattack")
        lines.append(
            f"| {name} | {100 * s['clean']:.2f}% | {100 * s['worst_case']:.2f}% | {s['seconds_per_100_images']:.1f} | "
            + (f"{100 * a['robust_accuracy']:.2f}% | {a['seconds_per_100_images']:.1f} |" if a else "— | — |")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    C, rows, X, Y = load(args)
    results = {}
    for name, defence in rows.items():
        results[name] = {"suite": time_suite(name, defence, C, X, Y, args)}
        if not args.skip_autoattack:
            results[name]["autoattack"] = time_autoattack(defence, C, X, Y, args)
    meta = {
        "n": len(X),
        "eps": args.eps,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "run": str(args.run),
    }
    md = markdown(results, meta)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_eval_suite.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (out / "bench_eval_suite.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
