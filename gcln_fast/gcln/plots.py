"""Figures of the paper, redrawn from this package's runs: PNG files (matplotlib, Agg) plus the JSON behind each.

* :func:`plot_training` -- Fig. 4: losses of G and D per step / epoch, accuracies per epoch.
* :func:`accuracy_vs_q` -- Fig. 3 (left): accuracy under white-box BPDA against the quantization step.
  A GCLN point needs a G trained at that q; what is drawn for each q is said in the labels
  (QNT alone at every q; QNT+G only at the q of the Gs passed in).
* :func:`accuracy_vs_iterations` -- Fig. 3 (right): accuracy under BPDA-PGD with 10..100 iterations.
* :func:`image_grid` -- the idea of Fig. 2: clean / attacked / cleaned images with C's predictions.

BPDA here is PGD through ``nn.Sequential(defence, classifier)``: the QNT layer's backward is
straight-through (the identity), which is exactly the BPDA approximation; G is differentiated
as it is. The iteration sweep runs one PGD of the largest iteration count and scores the
iterate after k steps: with a fixed step size and one random start, that iterate *is* the
result of PGD with k iterations (same start, same steps), so one run gives every point.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.io import atomic_write_json
from ..utils.metrics import accuracy
from ..utils.modules import frozen


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _write_json(obj, path: Path) -> Path:
    return atomic_write_json(path, obj)


def bpda_pgd_trace(
    model: nn.Module,
    x,
    y,
    *,
    eps=8 / 255,
    step=1 / 255,
    iterations=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
    batch=128,
    seed=0,
) -> dict[int, float]:
    """Accuracy of ``model`` on the PGD iterate after each count in ``iterations`` (one run, see module docs)."""
    iterations = sorted(int(i) for i in iterations)
    wanted = set(iterations)
    correct = {k: 0 for k in iterations}
    gen = torch.Generator().manual_seed(seed)
    with frozen(model):
        for i in range(0, x.shape[0], batch):
            x0, yb = x[i : i + batch].detach(), y[i : i + batch]
            noise = (torch.rand(x0.shape, generator=gen) * 2 - 1).to(x0.device)
            xa = (x0 + eps * noise).clamp(0, 1)
            for k in range(1, iterations[-1] + 1):
                xa.requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)
                xa = torch.min(torch.max(xa.detach() + step * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
                if k in wanted:
                    with torch.no_grad():
                        correct[k] += int((model(xa).argmax(1) == yb).sum())
    return {k: correct[k] / max(1, x.shape[0]) for k in iterations}


def _smooth(values, k: int = 9) -> list:
    """Centred running mean over ``k`` steps (the per-step curves are noisy batch statistics)."""
    vals = [v for v in values if v is not None]
    if len(vals) != len(values) or not vals:
        return list(values)
    t = torch.tensor(vals, dtype=torch.float64)[None, None]
    k = max(1, min(k, len(vals)) // 2 * 2 + 1)
    pad = torch.nn.functional.pad(t, (k // 2, k // 2), mode="replicate")
    return torch.nn.functional.avg_pool1d(pad, k, stride=1)[0, 0].tolist()


def _training_data(history: dict) -> dict:
    steps = history.get("steps", [])
    p1 = [s for s in steps if s.get("phase") == 1]
    p2 = [s for s in steps if s.get("phase") == 2]
    epochs = [e for e in history.get("epochs", []) if e.get("phase") == 2]
    col = lambda recs, k: [r.get(k) for r in recs]  # noqa: E731
    data = {"phase1_step": col(p1, "step"), "phase1_loss_d": col(p1, "loss_d"), "phase1_d_acc": col(p1, "d_acc")}
    for k in ("step", "loss_g", "loss_d", "loss_p", "loss_a", "loss_ce", "d_acc", "d_acc_real", "d_acc_fake"):
        data[k] = col(p2, k)
    data["epoch"] = col(epochs, "epoch")
    for k in ("loss_g", "loss_d", "acc_recovered", "acc_clean_through_g", "acc_attacked_no_defence", "d_acc"):
        data[f"epoch_{k}"] = col(epochs, k)
    data["epoch_guard_acc_through_g"] = col(epochs, "guard_acc_through_g")
    data["guard_events"] = history.get("guard", [])
    data["note"] = "training-batch metrics: x* crafted during training (oblivious unless the run was adaptive)"
    return data


def plot_training(history: dict, out_dir, name: str = "gcln_training") -> dict:
    """Fig. 4, extended: losses of G and D per step; D's accuracy on clean and on cleaned-attacked
    images per step (does D learn?); accuracies per epoch with the guard's held-out clean accuracy."""
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _training_data(history)
    fig, (a, d, b) = plt.subplots(1, 3, figsize=(15, 4))
    if data["phase1_step"]:
        a.plot(data["phase1_step"], data["phase1_loss_d"], color="tab:gray", lw=0.8, label="L_D (phase 1: D alone)")
    for key, label in (("loss_g", "L_G"), ("loss_d", "L_D"), ("loss_p", "L_P"), ("loss_a", "L_A"), ("loss_ce", "L_CE")):
        if any(v for v in data[key] if v):
            a.plot(data["step"], data[key], lw=0.8, label=label)
    a.set(xlabel="step", ylabel="loss", title="GCLN losses")
    a.legend(fontsize=8)
    if data["phase1_step"]:
        d.plot(data["phase1_step"], _smooth(data["phase1_d_acc"]), color="tab:gray", label="D accuracy (phase 1)")
    d.plot(data["step"], _smooth(data["d_acc_real"]), label="D right on clean images")
    d.plot(data["step"], _smooth(data["d_acc_fake"]), label="D right on G(x*)")
    d.plot(data["step"], _smooth(data["d_acc"]), "k:", label="D accuracy")
    d.axhline(0.5, color="k", lw=0.5)
    d.set(xlabel="step", ylabel="accuracy (running mean, 9 steps)", title="does D learn?", ylim=(-0.02, 1.02))
    d.legend(fontsize=8)
    b.plot(data["epoch"], data["epoch_acc_recovered"], "o-", label="acc C(G(x*)) (train batches)")
    b.plot(data["epoch"], data["epoch_acc_clean_through_g"], "s-", label="acc C(G(x)) clean (train batches)")
    if any(v is not None for v in data["epoch_guard_acc_through_g"]):
        b.plot(data["epoch"], data["epoch_guard_acc_through_g"], "D-", label="acc C(G(x)) held out (guard)")
    b.plot(data["epoch"], data["epoch_acc_attacked_no_defence"], "^-", label="acc C(x*) no defence")
    b.plot(data["epoch"], data["epoch_d_acc"], "x--", label="D accuracy")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy per epoch")
    b.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"png": png, "json": _write_json(data, out_dir / f"{name}.json")}


def accuracy_vs_q(
    classifier: nn.Module,
    X,
    Y,
    *,
    qs=(2, 5, 10, 15, 20),
    generators: dict | None = None,
    eps=8 / 255,
    step=1 / 255,
    iterations=10,
    out_dir=None,
    name="accuracy_vs_q",
    seed=0,
) -> dict:
    """Fig. 3 (left): BPDA-PGD accuracy against q, for QNT alone at every q and QNT+G where a G for that q is given.

    ``generators``: ``{q: G}`` (each G holds its own QNT layer with that q).
    """
    from ..layer import QuantizedDCT

    classifier = classifier.eval()
    data = {
        "eps": eps,
        "step": step,
        "iterations": int(iterations),
        "n": int(X.shape[0]),
        "q": [],
        "qnt_alone_bpda": [],
        "qnt_alone_clean": [],
        "gcln_q": [],
        "gcln_bpda": [],
        "gcln_clean": [],
    }
    none_acc = bpda_pgd_trace(classifier, X, Y, eps=eps, step=step, iterations=(iterations,), seed=seed)[iterations]
    data["no_defence_bpda"] = none_acc
    data["no_defence_clean"] = accuracy(classifier, X, Y)
    for q in qs:
        m = nn.Sequential(QuantizedDCT(float(q)), classifier).eval()
        data["q"].append(float(q))
        data["qnt_alone_bpda"].append(
            bpda_pgd_trace(m, X, Y, eps=eps, step=step, iterations=(iterations,), seed=seed)[iterations]
        )
        data["qnt_alone_clean"].append(accuracy(m, X, Y))
    for q, G in sorted((generators or {}).items()):
        m = nn.Sequential(G.eval(), classifier).eval()
        data["gcln_q"].append(float(q))
        data["gcln_bpda"].append(
            bpda_pgd_trace(m, X, Y, eps=eps, step=step, iterations=(iterations,), seed=seed)[iterations]
        )
        data["gcln_clean"].append(accuracy(m, X, Y))
    if out_dir is not None:
        plt = _plt()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(data["q"], data["qnt_alone_bpda"], "o-", label="QNT alone (no G), BPDA")
        ax.plot(data["q"], data["qnt_alone_clean"], "o:", color="tab:blue", alpha=0.5, label="QNT alone, clean")
        if data["gcln_q"]:
            ax.plot(data["gcln_q"], data["gcln_bpda"], "r*", ms=12, label="QNT+G (G trained at this q), BPDA")
            ax.plot(data["gcln_q"], data["gcln_clean"], "r+", ms=12, label="QNT+G, clean")
        ax.axhline(data["no_defence_bpda"], color="k", ls="--", lw=0.8, label="no defence, white-box PGD")
        ax.set_xlabel("quantization step q (8-bit units)")
        _save_accuracy_plot(
            plt, fig, ax, f"BPDA-PGD-{iterations}, eps={eps * 255:.0f}/255, n={data['n']}", 7, out_dir, name, data
        )
    return data


def accuracy_vs_iterations(
    defences: dict,
    classifier: nn.Module,
    X,
    Y,
    *,
    iterations=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
    eps=8 / 255,
    step=1 / 255,
    out_dir=None,
    name="accuracy_vs_bpda_iterations",
    seed=0,
) -> dict:
    """Fig. 3 (right): accuracy under white-box BPDA-PGD for each iteration count, per defence (``{name: module}``)."""
    classifier = classifier.eval()
    data = {"eps": eps, "step": step, "n": int(X.shape[0]), "iterations": [int(i) for i in iterations], "accuracy": {}}
    for label, d in defences.items():
        m = classifier if d is None else nn.Sequential(d.eval(), classifier).eval()
        trace = bpda_pgd_trace(m, X, Y, eps=eps, step=step, iterations=iterations, seed=seed)
        data["accuracy"][label] = [trace[k] for k in data["iterations"]]
    if out_dir is not None:
        plt = _plt()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for label, acc in data["accuracy"].items():
            ax.plot(data["iterations"], acc, "o-", label=label)
        ax.set_xlabel("BPDA-PGD iterations")
        title = f"white-box BPDA, eps={eps * 255:.0f}/255, step={step * 255:.0f}/255, n={data['n']}"
        _save_accuracy_plot(plt, fig, ax, title, 8, out_dir, name, data)
    return data


def _save_accuracy_plot(plt, fig, ax, title, legend_size, out_dir, name, data) -> None:
    """Finish an accuracy-vs-x figure, write it as PNG and the data behind it as JSON."""
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    data["png"] = str(png)
    _write_json(data, out_dir / f"{name}.json")


def image_grid(clean, attacked, cleaned, path, *, labels=None, classifier=None, title=None) -> dict:
    """Rows: clean / attacked / cleaned images (first 8); C's predictions in the captions when ``classifier`` is given."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = min(8, clean.shape[0])
    rows = {"clean": clean[:n], "attacked": attacked[:n], "cleaned by G": cleaned[:n]}
    preds = {}
    if classifier is not None:
        with torch.no_grad():
            preds = {k: classifier(v).argmax(1).tolist() for k, v in rows.items()}
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n, 4.6), squeeze=False)
    for r, (row, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            cap = []
            if preds:
                cap.append(f"pred {preds[row][c]}")
            if labels is not None and r == 0:
                cap.append(f"label {int(labels[c])}")
            ax.set_title(", ".join(cap), fontsize=7)
            if c == 0:
                ax.set_ylabel(row, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    data = {
        "rows": list(rows),
        "n": n,
        "labels": None if labels is None else [int(v) for v in labels[:n]],
        "predictions": preds,
        "linf_attack": float((attacked[:n] - clean[:n]).abs().max()),
        "linf_cleaned_vs_clean": float((cleaned[:n] - clean[:n]).abs().max()),
    }
    _write_json(data, path.with_suffix(".json"))
    return {"png": path, "json": path.with_suffix(".json")}
