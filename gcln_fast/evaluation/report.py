"""``write_report``: ``results.json``, ``results.md`` (Markdown tables in the style of the paper) and,
when the evaluation measured one, the accuracy-vs-eps plot ``eps_curve.png``."""

from __future__ import annotations

from pathlib import Path

from ..attacks import THREAT_MODEL_HELP
from ..utils.io import atomic_write_json, atomic_write_text


def _pct(a) -> str:
    return "—" if a is None else f"{100 * a:.2f}%"


def _label(table, a):
    return table.get("labels", {}).get(a, a)


def _md_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _e(eps) -> str:
    return f"{255 * eps:.3g}/255"


def attack_budget(a: str, s: dict) -> str:
    """One attack with its budget, as the report's header names it."""
    if a == "cw":
        if s["cw_linf_bound"]:
            return f"C&W loss in the eps-box ({s['cw_steps']} Adam steps)"
        return f"C&W-L2, minimum-norm ({s['cw_search_steps']} x {s['cw_steps']} steps; not in the worst case)"
    return {
        "fgsm": "FGS",
        "pgd": f"PGD-{s['steps']} (step {_e(s['step'])}, {s['restarts']} restart(s), best iterate)",
        "bim": f"BIM-{s['steps']} (step {_e(s['step'])})",
        "apgd-ce": f"APGD-CE ({s['apgd_steps']} its x {s['apgd_restarts']} restart(s))",
        "apgd-dlr": f"APGD-DLR ({s['apgd_steps']} its x {s['apgd_restarts']} restart(s))",
        "apgd-t": f"APGD-T ({s['n_target_classes']} target classes x {s['apgd_steps']} its)",
        "square": f"Square ({s['square_queries']} queries, p_init {s['square_p_init']:g})",
    }[a]


def sanity_lines(table) -> list[str]:
    """One ``[PASS]/[FLAG]/[SKIP] row: check — detail`` line per sanity check."""
    return [
        f"[{c['status']}] {name}: {c['check']} — {c['detail']}"
        for name, checks in table.get("sanity", {}).items()
        for c in checks
    ]


def _header(table) -> list[str]:
    meta, cols, s = table["meta"], table["columns"], table["meta"]["settings"]
    src = f" from {meta['dataset']}" if meta.get("dataset") else ""
    suite = f"Suite **{meta['suite']}**; " if meta.get("suite") else ""
    lines = [
        "# Robustness evaluation",
        "",
        f"{meta['n']} images{src}; {suite}L-inf eps = {_e(s['eps'])}; EOT {s['eot']}; seed {meta['seed']}; "
        f"chance (most frequent class) {_pct(meta.get('chance'))}.",
        "",
    ]
    for group in ("oblivious", "adaptive", "transfer"):
        if cols[group]:
            lines.append(f"- {group}: " + "; ".join(attack_budget(a, s) for a in cols[group]))
    lines += [
        f"- backward surrogates of the QNT rounding (adaptive): {', '.join(s['surrogates'])}; "
        "the generator's output clamp passes gradients straight through",
        "",
        "Threat models: " + "; ".join(f"**{k}**: {v}" for k, v in THREAT_MODEL_HELP.items()) + ".",
        "",
    ]
    return lines


def _headline(table) -> list[str]:
    rows = table["rows"]
    own = len({r.get("classifier", "classifier") for r in rows.values()}) > 1
    lines = [
        "## Headline: worst case per image",
        "",
        "An image counts as robust only if it is classified correctly clean **and** under every attack run for its "
        "row (oblivious, adaptive and transfer). This is the number to quote, beside chance; a row marked BROKEN "
        "classifies at or near chance, or far below its classifier, and its robust numbers mean nothing.",
        "",
    ]

    def status(r):
        return "BROKEN: " + "; ".join(r["broken"]) if r.get("broken") else "ok"

    lines += _md_table(
        ["Defence"]
        + (["Classifier"] if own else [])
        + ["Clean", "**Worst case (headline)**", "Above chance", "Oblivious worst case", "Adaptive worst case"]
        + ["Black-box worst case", "Status"],
        [
            [n]
            + ([r.get("classifier", "")] if own else [])
            + [_pct(r["clean"]), f"**{_pct(r['worst_case'])}**", f"{100 * r['worst_case_above_chance']:+.2f} pts"]
            + [_pct(r["worst_case_oblivious"]), _pct(r["worst_case_adaptive"]), _pct(r["worst_case_transfer"])]
            + [status(r)]
            for n, r in rows.items()
        ],
    )
    return lines


def _oblivious(table) -> list[str]:
    cols, rows = table["columns"], table["rows"]
    lines = ["", "## Oblivious white-box attacks (crafted on the classifier only), each beside its adaptive number", ""]

    def cell(r, a):
        twin = f" (adaptive {_pct(r['adaptive'][a])})" if a in r["adaptive"] else " (adaptive not run)"
        return _pct(r["oblivious"][a]) + twin

    return lines + _md_table(
        ["Defence", "Clean"] + [_label(table, a) for a in cols["oblivious"]],
        [[n, _pct(r["clean"])] + [cell(r, a) for a in cols["oblivious"]] for n, r in rows.items()],
    )


def _adaptive(table) -> list[str]:
    cols, rows = table["columns"], table["rows"]
    lines = [
        "",
        "## Adaptive white-box attacks (through defence + classifier; per image the worst over surrogates)",
        "",
    ]
    lines += _md_table(
        ["Defence", "Clean"] + [_label(table, a) for a in cols["adaptive"]] + ["Worst case"],
        [
            [n, _pct(r["clean"])]
            + [_pct(r["adaptive"][a]) for a in cols["adaptive"]]
            + [_pct(r["worst_case_adaptive"])]
            for n, r in rows.items()
        ],
    )
    per = [(n, s, acc) for n, r in rows.items() for s, acc in r.get("adaptive_by_surrogate", {}).items()]
    if per:
        lines += ["", "Per backward surrogate (the table above takes, per image, the worst of them):", ""]
        lines += _md_table(
            ["Defence", "Surrogate"] + [_label(table, a) for a in cols["adaptive"]],
            [[n, s] + [_pct(acc.get(a)) for a in cols["adaptive"]] for n, s, acc in per],
        )
    if table.get("min_norm"):
        names = ", ".join(_label(table, a) for a in table["min_norm"])
        lines += ["", f"{names}: minimum-norm attack (success rate at any L2 size), not in any worst case."]
    return lines


def _transfer(table) -> list[str]:
    cols, rows = table["columns"], table["rows"]
    lines = ["", "## Black-box transfer attacks (crafted on the substitute model)", ""]
    if not cols["transfer"]:
        return lines + ["Not run (no substitute model given)."]

    def cell(r, a):
        return _pct(r["transfer"][a]) + (f" (adaptive {_pct(r['adaptive'][a])})" if a in r["adaptive"] else "")

    return lines + _md_table(
        ["Defence", "No attack"] + [_label(table, a) for a in cols["transfer"]],
        [[n, _pct(r["clean"])] + [cell(r, a) for a in cols["transfer"]] for n, r in rows.items()],
    )


def _eps_curve(table) -> list[str]:
    curves = table.get("eps_curve") or {}
    if not curves:
        return []
    first = next(iter(curves.values()))
    lines = [
        "",
        f"## Accuracy vs eps (adaptive {_label(table, first['attack'])}, first {first['subset']} images; "
        "plot: eps_curve.png)",
        "",
    ]
    return lines + _md_table(
        ["Defence", "0 (clean)"] + [_e(e) for e in first["eps"]],
        [[n, _pct(c["clean"]), *map(_pct, c["accuracy"])] for n, c in curves.items()],
    )


def _sweeps(table) -> list[str]:
    sw = table.get("sweeps", {})
    if not sw:
        return []
    first = next(iter(sw.values()))
    eps = table["meta"]["settings"]["eps"]
    lines = ["", f"Adaptive PGD accuracy vs eps (first {first['subset']} images):", ""]
    lines += _md_table(
        ["Defence", "0 (clean)"] + [_e(e) for e in first["eps"]["eps"]],
        [[n, _pct(v["eps"].get("clean")), *map(_pct, v["eps"]["accuracy"])] for n, v in sw.items()],
    )
    lines += ["", f"Adaptive PGD accuracy vs iterations (first {first['subset']} images, eps {_e(eps)}):", ""]
    return lines + _md_table(
        ["Defence"] + [f"{i} its" for i in first["iterations"]["iterations"]],
        [[n, *map(_pct, v["iterations"]["accuracy"])] for n, v in sw.items()],
    )


def _sanity(table) -> list[str]:
    lines = ["", "## Sanity checks (Athalye et al. 2018; Carlini et al. 2019; broken defences)", ""]
    sl = sanity_lines(table)
    if not sl:
        return lines + ["Not run."]
    lines += ["A FLAG is a finding (masked gradients or a broken defence inflate the numbers), not an error.", ""]
    return lines + [f"- {line}" for line in sl] + _sweeps(table)


def _footer(table) -> list[str]:
    meta = table["meta"]
    ips = meta.get("images_per_second")
    per100 = meta.get("seconds_per_100_images")
    return [
        "",
        f"Time: {meta.get('seconds', 0):.1f} s"
        + (f" ({per100:.1f} s per 100 images)" if per100 else "")
        + f", {meta.get('adversarial_images', 0)} adversarial images"
        + (f" ({ips:.1f} images/s)" if ips else "")
        + f" on {meta.get('device')}, {meta.get('threads', '?')} threads.",
        "",
    ]


def format_markdown(table) -> str:
    parts = (_header, _headline, _oblivious, _adaptive, _transfer, _eps_curve, _sanity, _footer)
    return "\n".join(line for part in parts for line in part(table))


def write_report(table, out_dir) -> dict:
    """Write ``results.json`` (the table as returned by ``evaluate``), ``results.md`` and, when the
    table has an eps curve, ``eps_curve.png``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    atomic_write_json(paths["json"], table, indent=2, allow_nan=False)
    atomic_write_text(paths["markdown"], format_markdown(table))
    if table.get("eps_curve"):
        from .plots import plot_eps_curve

        paths["eps_curve"] = plot_eps_curve(table, out / "eps_curve.png")
    return paths
