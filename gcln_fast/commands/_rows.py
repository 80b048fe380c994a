"""Table rows that each bring their own classifier (``GCLN + fine-tuned C``, ``PGD-AT``), evaluated
with ``gcln_fast.evaluation.evaluate`` and merged into one table.

``evaluate`` takes one classifier for all rows; rows are grouped by classifier, each group is
evaluated on the same images with the same settings and seed, and the groups' rows, sanity checks
and sweeps are merged in the order given. Oblivious attacks of a group are crafted on that group's
classifier (for a row without a defence, oblivious = adaptive, as it should be).
"""

from __future__ import annotations

from torch import nn


def evaluate_rows(rows, substitute, X, Y, **evaluate_kwargs) -> dict:
    """``rows``: sequence of ``(name, defence, classifier)``; returns one ``evaluate`` table."""
    from ..evaluation import evaluate

    groups: list[tuple[nn.Module, dict]] = []
    for name, defence, classifier in rows:
        for clf, defences in groups:
            if clf is classifier:
                defences[name] = defence
                break
        else:
            groups.append((classifier, {name: defence}))
    merged = None
    for clf, defences in groups:
        table = evaluate(defences, clf, substitute, X, Y, **evaluate_kwargs)
        if merged is None:
            merged = table
            continue
        for key in ("rows", "sanity", "sweeps"):
            merged[key].update(table[key])
        merged["meta"]["seconds"] += table["meta"]["seconds"]
    merged["meta"]["classifiers"] = {name: getattr(c, "arch", type(c).__name__) for name, _, c in rows}
    order = [name for name, _, _ in rows]
    for key in ("rows", "sanity", "sweeps"):
        merged[key] = {k: merged[key][k] for k in order if k in merged[key]}
    return merged
