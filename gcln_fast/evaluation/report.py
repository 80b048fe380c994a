"""``write_report``: ``results.json`` and ``results.md`` (Markdown tables in the style of the paper)."""

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


def sanity_lines(table) -> list[str]:
    """One ``[PASS]/[FLAG]/[SKIP] row: check — detail`` line per sanity check."""
    out = []
    for name, checks in table.get("sanity", {}).items():
        for c in checks:
            out.append(f"[{c['status']}] {name}: {c['check']} — {c['detail']}")
    return out


def format_markdown(table) -> str:
    meta = table["meta"]
    cols = table["columns"]
    rows = table["rows"]
    s = meta["settings"]
    n_attacks = len(cols["oblivious"]) + len(cols["adaptive"]) + len(cols["transfer"])
    lines = [
        "# Robustness evaluation",
        "",
        f"{meta['n']} images{(' from ' + str(meta['dataset'])) if meta.get('dataset') else ''}; "
        f"L-inf eps = {255 * s['eps']:.3g}/255, step {255 * s['step']:.3g}/255, {s['steps']} iterations (FGS/BIM/PGD); "
        f"APGD {s['apgd_steps']} iterations x {s['apgd_restarts']} restart(s); C&W-L2 {s['cw_steps']} Adam steps"
        f"{' bounded to the eps-ball' if s['cw_linf_bound'] else ''}; EOT {s['eot']}; seed {meta['seed']}.",
        "",
        "Threat models: " + "; ".join(f"**{k}**: {v}" for k, v in THREAT_MODEL_HELP.items()) + ".",
        "",
        "## Headline: worst case per image",
        "",
        f"An image counts as robust only if it is classified correctly clean **and** under every one of the {n_attacks} "
        "attacks run (oblivious, adaptive BPDA and transfer). This is the number to quote; the oblivious number beside "
        "it is what an evaluation that ignores the defence would report.",
        "",
    ]
    lines += _md_table(
        [
            "Defence",
            "Clean",
            "**Worst case (headline)**",
            "Oblivious worst case",
            "Adaptive worst case",
            "Black-box worst case",
        ],
        [
            [
                n,
                _pct(r["clean"]),
                f"**{_pct(r['worst_case'])}**",
                _pct(r["worst_case_oblivious"]),
                _pct(r["worst_case_adaptive"]),
                _pct(r["worst_case_transfer"]),
            ]
            for n, r in rows.items()
        ],
    )
    lines += [
        "",
        "## White-box attacks, oblivious (crafted on the classifier only), each beside its adaptive (BPDA) number",
        "",
    ]
    lines += _md_table(
        ["Defence", "Clean"] + [_label(table, a) for a in cols["oblivious"]],
        [
            [n, _pct(r["clean"])]
            + [
                _pct(r["oblivious"][a])
                + (f" (adaptive {_pct(r['adaptive'][a])})" if a in r["adaptive"] else " (adaptive not run)")
                for a in cols["oblivious"]
            ]
            for n, r in rows.items()
        ],
    )
    lines += ["", "## Adaptive white-box attacks (BPDA: gradients through defence + classifier)", ""]
    lines += _md_table(
        ["Defence", "Clean"] + [_label(table, a) for a in cols["adaptive"]] + ["Worst case"],
        [
            [n, _pct(r["clean"])]
            + [_pct(r["adaptive"][a]) for a in cols["adaptive"]]
            + [_pct(r["worst_case_adaptive"])]
            for n, r in rows.items()
        ],
    )
    lines += ["", "## Black-box transfer attacks (crafted on the substitute model)", ""]
    if cols["transfer"]:
        lines += _md_table(
            ["Defence", "No attack"] + [_label(table, a) for a in cols["transfer"]],
            [
                [n, _pct(r["clean"])]
                + [
                    _pct(r["transfer"][a]) + (f" (adaptive {_pct(r['adaptive'][a])})" if a in r["adaptive"] else "")
                    for a in cols["transfer"]
                ]
                for n, r in rows.items()
            ],
        )
    else:
        lines.append("Not run (no substitute model given).")
    lines += ["", "## Sanity checks (Athalye et al. 2018; Carlini et al. 2019)", ""]
    sl = sanity_lines(table)
    if sl:
        lines.append(
            "A FLAG is a finding (signs of gradient masking that inflate the white-box numbers), not an error."
        )
        lines.append("")
        lines += [f"- {line}" for line in sl]
        sw = table.get("sweeps", {})
        if sw:
            first = next(iter(sw.values()))
            lines += ["", f"Adaptive PGD accuracy vs eps (first {first['subset']} images):", ""]
            lines += _md_table(
                ["Defence"] + [f"{255 * e:.3g}/255" for e in first["eps"]["eps"]],
                [[n, *map(_pct, v["eps"]["accuracy"])] for n, v in sw.items()],
            )
            lines += [
                "",
                f"Adaptive PGD accuracy vs iterations (first {first['subset']} images, eps {255 * s['eps']:.3g}/255):",
                "",
            ]
            lines += _md_table(
                ["Defence"] + [f"{i} its" for i in first["iterations"]["iterations"]],
                [[n, *map(_pct, v["iterations"]["accuracy"])] for n, v in sw.items()],
            )
    else:
        lines.append("Not run.")
    ips = meta.get("images_per_second")
    lines += [
        "",
        f"Time: {meta.get('seconds', 0):.1f} s, {meta.get('adversarial_images', 0)} adversarial images"
        + (f" ({ips:.1f} images/s)" if ips else "")
        + f" on {meta.get('device')}.",
        "",
    ]
    return "\n".join(lines)


def write_report(table, out_dir) -> dict:
    """Write ``results.json`` (the table as returned by ``evaluate``) and ``results.md``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    md_path = out / "results.md"
    atomic_write_json(json_path, table, indent=2, allow_nan=False)
    atomic_write_text(md_path, format_markdown(table))
    return {"json": json_path, "markdown": md_path}
