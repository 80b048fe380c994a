"""Training of target classifiers (:mod:`gcln_fast.training.classifier`)."""

from .classifier import evaluate_accuracy, train_classifier

__all__ = ["evaluate_accuracy", "train_classifier"]
