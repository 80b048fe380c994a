"""Losses of GCLN (eqs. 3-5 of the paper).

* ``PerceptualLoss``: ``L_P = ||F(x_o) - F(G(x*))||_2`` implemented as the
  **mean squared feature distance**, averaged over the chosen layers; by
  default (``normalize=True``) each layer's MSE is divided by the mean square
  of the target's features, i.e. a relative squared error, so layers and
  networks of any scale weigh alike and ``lambda`` means the same whichever
  network supplies ``F``. ``F`` is VGG-19 (ImageNet weights, read from a local file only,
  never downloaded); where those weights are absent, ``F`` falls back to the
  target classifier's own intermediate features (the outputs of its ``Conv2d``
  layers and the pooled features its last ``Linear`` layer reads) and says so with :func:`warnings.warn`. There is never a silent
  random feature network: with neither weights nor a classifier it raises.
* ``adversarial_loss``: ``L_A = CE(D(G(x*)), clean)`` (eq. 5).
* ``generator_loss``: ``L_G = lambda * L_P + (1 - lambda) * L_A`` (eq. 3), lambda = 0.5 by default.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .detector import CLEAN

VGG19_FILE = "vgg19-dcbb9e9d.pth"
SOURCES = ("auto", "vgg19", "classifier", "pixel")
# indices into torchvision's vgg19().features: 8 = relu2_2, 17 = relu3_4
DEFAULT_VGG_LAYERS = (8, 17)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def find_vgg19_weights(path=None) -> Path | None:
    """The local VGG-19 weights file: ``path``, ``$GCLN_VGG19_WEIGHTS``, or the torch hub cache; None if absent."""
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    if os.environ.get("GCLN_VGG19_WEIGHTS"):
        candidates.append(Path(os.environ["GCLN_VGG19_WEIGHTS"]))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)
    for c in candidates:
        if c.is_file():
            return c
    if path is not None:
        raise FileNotFoundError(f"VGG-19 weights not found at {path}")
    return None


def _vgg19_features(weights_path: Path, last: int) -> nn.Sequential:
    from torchvision.models import vgg

    try:
        features = vgg.make_layers(vgg.cfgs["E"], batch_norm=False)
    except (AttributeError, KeyError):  # torchvision internals moved: build the whole net
        features = vgg.vgg19(weights=None).features
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(state)
    return features[: last + 1]


class PerceptualLoss(nn.Module):
    """Mean squared distance between feature maps of a frozen network.

    Args:
        classifier: the target classifier; its ``Conv2d`` outputs are the
            fallback features when the VGG-19 weights are not on disk.
        weights: path of the VGG-19 ImageNet state dict (``vgg19-dcbb9e9d.pth``);
            default: ``$GCLN_VGG19_WEIGHTS`` or the torch hub cache.
        source: ``"auto"`` (VGG-19 if its weights are found, else the
            classifier with a warning), ``"vgg19"``, ``"classifier"`` or ``"pixel"`` (no
            feature network: the relative pixel error, a control for the classifier fallback).
        vgg_layers: indices of ``vgg19().features`` whose outputs are compared.
        pixel_weight: optional extra weight on a pixel MSE term (0: the paper's loss).
        penultimate: with the classifier fallback, also compare the input of the classifier's
            last ``nn.Linear`` (its pooled penultimate features), not only the ``Conv2d`` outputs.
        squared: ``True``: mean squared distance; ``False``: the L2 norm of eq. 4 (per image).
        normalize: divide each layer's MSE by the mean square of the target's features
            (a relative feature error, so layers and networks of any scale weigh alike).

    ``forward(output, target)``: features of ``target`` are computed without
    gradient; the loss is differentiable with respect to ``output``.
    """

    def __init__(
        self,
        classifier: nn.Module | None = None,
        *,
        weights=None,
        source: str = "auto",
        vgg_layers=DEFAULT_VGG_LAYERS,
        pixel_weight: float = 0.0,
        normalize: bool = True,
        penultimate: bool = True,
        squared: bool = True,
    ):
        super().__init__()
        self.squared = bool(squared)
        self.normalize = bool(normalize)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.pixel_weight = float(pixel_weight)
        self._hooks = []
        self._store: list[torch.Tensor] | None = None
        if source == "pixel":  # no feature network: the relative pixel error (a control for the fallback)
            self.source, self.net = "pixel", None
            return
        path = find_vgg19_weights(weights) if source != "classifier" else None
        if source == "vgg19" and path is None:
            raise FileNotFoundError(
                f"VGG-19 weights not found (pass weights=, set GCLN_VGG19_WEIGHTS or put {VGG19_FILE} "
                f"in {Path(torch.hub.get_dir()) / 'checkpoints'}); nothing is downloaded"
            )
        if path is not None:
            self.source = "vgg19"
            self.layers = tuple(int(i) for i in vgg_layers)
            self.net = _vgg19_features(path, max(self.layers))
            self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        else:
            if classifier is None:
                raise FileNotFoundError(
                    "no VGG-19 weights on disk and no classifier given: PerceptualLoss needs one of them "
                    "(it never falls back to a random network)"
                )
            if source == "auto":
                warnings.warn(
                    f"VGG-19 ImageNet weights not found ({VGG19_FILE} in {Path(torch.hub.get_dir()) / 'checkpoints'} "
                    "or $GCLN_VGG19_WEIGHTS); the perceptual loss uses the target classifier's own "
                    "intermediate features (its Conv2d outputs and penultimate features) instead",
                    stacklevel=2,
                )
            self.source = "classifier"
            convs = [m for m in classifier.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ValueError("the classifier has no Conv2d layers to take features from")
            # not registered as a submodule: the classifier is not part of this loss's state, and its
            # parameters are left as the caller set them (train_gcln freezes C while it trains)
            object.__setattr__(self, "net", classifier)
            for m in convs:
                self._hooks.append(m.register_forward_hook(self._capture))
            linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
            if penultimate and linears:  # the pooled features the classifier's last layer reads
                self._hooks.append(linears[-1].register_forward_pre_hook(self._capture_input))
        for p in self.parameters():
            p.requires_grad_(False)

    def _capture_input(self, module, inputs):
        if self._store is not None:
            self._store.append(inputs[0])

    def _capture(self, module, inputs, output):
        if self._store is not None:
            self._store.append(output)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.source == "pixel":
            return [x]
        if self.source == "vgg19":
            h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
            out = []
            for i, layer in enumerate(self.net):
                h = layer(h)
                if i in self.layers:
                    out.append(h)
                if i >= max(self.layers):
                    break
            return out
        self._store = []
        try:
            self.net(x)
            return self._store
        finally:
            self._store = None

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = [f.detach().clone() for f in self.features(target)]
        fo = self.features(output)
        terms = []
        for a, b in zip(fo, ft, strict=True):
            a, b = a.float(), b.float()
            if self.squared:
                term = F.mse_loss(a, b)
                if self.normalize:  # relative error: each layer's MSE over the target's mean square
                    term = term / (b.pow(2).mean() + 1e-8)
            else:  # eq. 4 literally: the L2 norm of the feature difference, per image, then the mean
                diff = (a - b).flatten(1).norm(dim=1)
                if self.normalize:
                    diff = diff / (b.flatten(1).norm(dim=1) + 1e-6)
                term = diff.mean()
            terms.append(term)
        loss = sum(terms) / len(terms)
        if self.pixel_weight:
            loss = loss + self.pixel_weight * F.mse_loss(output.float(), target.float())
        return loss

    def remove(self) -> None:
        """Detach the feature hooks from the classifier (fallback source only)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def extra_repr(self) -> str:
        return f"source={self.source!r}"


def adversarial_loss(detector_logits: torch.Tensor) -> torch.Tensor:
    """``L_A``: cross-entropy of D's output on G(x*) against the *clean* label (eq. 5)."""
    target = torch.full((detector_logits.shape[0],), CLEAN, dtype=torch.long, device=detector_logits.device)
    return F.cross_entropy(detector_logits.float(), target)


def generator_loss(perceptual: torch.Tensor, adversarial: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """``L_G = lambda * L_P + (1 - lambda) * L_A`` (eq. 3)."""
    return lam * perceptual + (1.0 - lam) * adversarial
