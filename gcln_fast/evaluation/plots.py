"""The accuracy-vs-eps figure of an evaluation (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from ..utils.io import atomic_write


def plot_eps_curve(table: dict, path) -> Path:
    """One line per row: clean accuracy at eps 0, then the adaptive attack's accuracy at each eps of
    ``table["eps_curve"]``; chance as a dotted line. Written atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    curves = table["eps_curve"]
    first = next(iter(curves.values()))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in curves.items():
        ax.plot(
            [0.0] + [255 * e for e in c["eps"]], [100 * c["clean"]] + [100 * a for a in c["accuracy"]], "o-", label=name
        )
    chance = table["meta"].get("chance")
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle=":", label="chance")
    label = table.get("labels", {}).get(first["attack"], first["attack"])
    suite = table["meta"].get("suite")
    ax.set(
        xlabel="eps (x/255, L-inf)",
        ylabel="accuracy (%)",
        ylim=(-2, 102),
        title=f"Accuracy vs eps: adaptive {label}, {first['subset']} images" + (f" ({suite})" if suite else ""),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path
