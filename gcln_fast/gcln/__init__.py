"""GCLN: generative cleaning network with the quantized nonlinear transform (section 3 of the paper).

``Generator`` (G, the defence), ``Detector`` (D), ``PerceptualLoss`` (L_P),
``train_gcln`` (phase 1: D; phase 2: G vs D) and ``load_generator``.
"""

from .detector import Detector
from .generator import Generator
from .losses import PerceptualLoss
from .settings import GCLNSettings
from .train import load_generator, train_gcln

__all__ = ["GCLNSettings", "Generator", "Detector", "PerceptualLoss", "train_gcln", "load_generator"]
