"""The rows of an evaluation: a defence, and the classifier behind it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Row:
    """One row of the table: ``defence`` in front of ``classifier`` (None: the evaluation's default
    classifier). A row with its own classifier (an adversarially trained one, a classifier fine-tuned
    with its defence) is attacked obliviously on that classifier alone, and its clean accuracy is
    judged against that classifier's."""

    defence: nn.Module
    classifier: nn.Module | None = None


@dataclass(frozen=True)
class ResolvedRow:
    name: str
    defence: nn.Module
    classifier: nn.Module
    classifier_label: str  # names the classifier in the table ("classifier", or the first row that owns it)


def _split(name, value):
    if isinstance(value, Row):
        return value.defence, value.classifier
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"defences[{name!r}] must be (defence, classifier), got a tuple of {len(value)}")
        return value
    return value, None


def resolve_rows(defences, classifier) -> list[ResolvedRow]:
    """``defences``: ``{name: defence}``, ``{name: Row(defence, classifier)}`` or
    ``{name: (defence, classifier)}`` (mixed freely); rows without a classifier use ``classifier``."""
    if not isinstance(defences, dict) or not defences:
        raise ValueError("defences must be a non-empty dict {row name: nn.Module} (nn.Identity() for 'No defence')")
    if classifier is not None and not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module or None, got {type(classifier).__name__}")
    rows, labels = [], {}
    if classifier is not None:
        labels[id(classifier)] = "classifier"
    for name, value in defences.items():
        defence, own = _split(name, value)
        if not isinstance(name, str) or not isinstance(defence, nn.Module):
            raise TypeError(f"defences must map str -> nn.Module, got {name!r} -> {type(defence).__name__}")
        if own is not None and not isinstance(own, nn.Module):
            raise TypeError(f"the classifier of row {name!r} must be an nn.Module, got {type(own).__name__}")
        clf = own if own is not None else classifier
        if clf is None:
            raise TypeError(f"row {name!r} has no classifier: pass classifier= or Row(defence, classifier)")
        label = labels.setdefault(id(clf), f"classifier of {name!r}")
        rows.append(ResolvedRow(name, defence, clf, label))
    return rows
