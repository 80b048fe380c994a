"""The paper's CIFAR-10 numbers (Tables 1-3 of ``shared/paper/gcln-paper.txt``, eps 8/256), and the
Markdown that sets a run's rows beside them."""

from __future__ import annotations

# Table 1, white-box (most likely oblivious: see README "What the numbers mean"): clean, FGS, PGD, BIM, C&W
TABLE1 = {
    "No Defense": (0.9438, 0.3189, 0.0000, 0.0000, 0.0099),
    "Adversarial-PGD (Tramer et al., 2018)": (0.8350, 0.6792, 0.6015, None, None),
    "GCLN paper (Qs = 10)": (0.9165, 0.7522, 0.8605, 0.8643, 0.8642),
}
# Table 2, white-box BPDA at 0.031 L-inf
TABLE2 = {"PGD Adversarial Training (Madry et al., 2018)": 0.47, "GCLN paper (Qs = 10)": 0.53}
# Table 3, black-box (substitute ResNet-34): clean, FGS, PGD
TABLE3 = {
    "No Defense": (0.9438, 0.6321, 0.3871),
    "Adversarial-PGD (Tramer et al., 2018)": (0.8350, 0.5773, 0.5572),
    "GCLN paper (Qs = 10)": (0.9165, 0.7756, 0.7981),
}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _line(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def beside_paper(table: dict, *, substitute_arch: str, perceptual: str) -> str:
    """Markdown: each of the paper's Tables 1-3 with this run's rows (``table`` from ``evaluate``) below."""
    rows, n = table["rows"], table["meta"]["n"]
    eps = 255 * table["meta"]["settings"]["eps"]

    def ours(r, group, a):
        return r.get(group, {}).get(a)

    out = [
        f"### Table 1: white-box (paper) vs oblivious and adaptive (this run; {n} test images, eps {eps:.3g}/255)",
        f"Perceptual network of L_P in this run: {perceptual}.",
        "",
        _line(["defence", "clean", "FGS", "PGD", "BIM", "C&W"]),
        _line(["---"] * 6),
    ]
    out += [_line([f"paper: {k}", *map(_pct, v)]) for k, v in TABLE1.items()]
    for name, r in rows.items():
        for group in ("oblivious", "adaptive"):
            cells = [_pct(ours(r, group, a)) for a in ("fgsm", "pgd", "bim", "cw")]
            out.append(_line([f"ours ({group}): {name}", _pct(r["clean"]), *cells]))
    out += ["", "### Table 2: BPDA (adaptive PGD through the defence; the paper: 0.031 L-inf)", ""]
    out += [_line(["defence", "accuracy", "worst case over every attack run"]), _line(["---"] * 3)]
    out += [_line([f"paper: {k}", _pct(v), "—"]) for k, v in TABLE2.items()]
    out += [_line([f"ours: {k}", _pct(ours(r, "adaptive", "pgd")), _pct(r["worst_case"])]) for k, r in rows.items()]
    out += ["", f"### Table 3: black-box (paper: ResNet-34 substitute; this run: {substitute_arch} substitute)", ""]
    out += [_line(["defence", "clean", "FGS", "PGD"]), _line(["---"] * 4)]
    out += [_line([f"paper: {k}", *map(_pct, v)]) for k, v in TABLE3.items()]
    for name, r in rows.items():
        out.append(
            _line(
                [f"ours: {name}", _pct(r["clean"]), _pct(ours(r, "transfer", "fgsm")), _pct(ours(r, "transfer", "pgd"))]
            )
        )
    return "\n".join(out) + "\n"
