"""Target classifiers (they take images in [0, 1]; normalisation is their first module)."""

from .classifiers import ARCHS, Classifier, Normalize, build_classifier, load_classifier, save_classifier

__all__ = ["ARCHS", "Classifier", "Normalize", "build_classifier", "load_classifier", "save_classifier"]
