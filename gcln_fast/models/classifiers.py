"""Classifiers for 32x32 images: ``small_cnn`` (fast on a CPU), ``resnet20`` (He et al. 2016's CIFAR
ResNet, 0.27 M parameters), ``resnet18`` / ``resnet34`` (torchvision's, adapted to 32x32).

Every model maps float32 images (N, 3, 32, 32) in [0, 1] to logits: the per-channel
normalisation is the first module (:class:`Normalize`, with ``mean``/``std`` buffers that
are saved in the state dict). Checkpoints are plain dicts
``{"arch", "num_classes", "state_dict", "meta"}`` written atomically and loaded with
``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gcln_fast.utils.checkpoint import KINDS, atomic_save, load_checkpoint

ARCHS = ("small_cnn", "resnet20", "resnet18", "resnet34")
# a final classifier file, or a training state (a superset: the weights of its last epoch)
CLASSIFIER_KINDS = ("classifier", "classifier_train_state")
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)
# the usual CIFAR-10 training-set statistics: resnet20's default normalisation
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are (persistent) buffers."""

    def __init__(self, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """Four 3x3 conv+BN+ReLU blocks at 32, 16, 8, 4 px (widths 16-32-64-128), global
    average pool, linear head: about 0.1 M parameters and 4 M multiply-adds per image
    (one training step on a batch of 128 takes ~0.1 s on one CPU core)."""
    w = width
    return nn.Sequential(
        *_conv_bn(3, w),
        nn.MaxPool2d(2),  # 16x16
        *_conv_bn(w, 2 * w),
        nn.MaxPool2d(2),  # 8x8
        *_conv_bn(2 * w, 4 * w),
        nn.MaxPool2d(2),  # 4x4
        *_conv_bn(4 * w, 8 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * w, num_classes),
    )


class _CifarBlock(nn.Module):
    """Basic block of He et al. (2016) section 4.2; option A: a strided identity shortcut whose
    missing channels are zeros (no parameters), as in the paper's CIFAR-10 ResNets."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images (He et al. 2016, section 4.2): a 3x3 conv with 16 channels,
    three stages of ``n`` basic blocks at 16/32/64 channels and 32/16/8 px, global average pool,
    linear head. ``n=3`` is ResNet-20 (0.27 M parameters). Module names follow the common
    PyTorch port (conv1, bn1, layer1-3, linear), so its checkpoints map one to one."""

    def __init__(self, n: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, cin, stages = (16, 32, 64), 16, []
        for i, w in enumerate(widths):
            blocks = [_CifarBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.linear(h.mean(dim=(2, 3)))


def _resnet(arch: str, num_classes: int) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # 32x32 stem
    net.maxpool = nn.Identity()
    return net


class Classifier(nn.Module):
    """``net(normalize(x))``; ``arch`` and ``num_classes`` are kept as attributes."""

    def __init__(self, arch: str, net: nn.Module, num_classes: int, mean=DEFAULT_MEAN, std=DEFAULT_STD):
        super().__init__()
        self.arch, self.num_classes = arch, num_classes
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_classifier(
    arch: str, num_classes: int = 10, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Classifier:
    """A freshly initialised classifier taking images in [0, 1].

    ``mean``/``std`` set the built-in normalisation (default: the CIFAR-10 statistics for
    ``resnet20``, 0.5 / 0.25 per channel otherwise; see ``gcln_fast.data.STATS`` for per-dataset
    values)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown classifier arch {arch!r}; valid: {', '.join(ARCHS)}")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2")
    if arch == "small_cnn":
        net = small_cnn(num_classes)
    elif arch == "resnet20":
        net = CifarResNet(3, num_classes)
    else:
        net = _resnet(arch, num_classes)
    default_mean, default_std = (CIFAR_MEAN, CIFAR_STD) if arch == "resnet20" else (DEFAULT_MEAN, DEFAULT_STD)
    return Classifier(
        arch, net, num_classes, mean if mean is not None else default_mean, std if std is not None else default_std
    )


def save_classifier(model: nn.Module, path, *, arch: str, num_classes: int, **meta):
    """Write ``{"arch", "num_classes", "state_dict", "meta"}`` atomically to ``path``.

    ``meta`` must hold plain values (str/int/float/bool/None, lists, dicts) so that the
    file loads with ``weights_only=True``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown classifier arch {arch!r}; valid: {', '.join(ARCHS)}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return atomic_save(
        {"kind": "classifier", "arch": arch, "num_classes": int(num_classes), "state_dict": state, "meta": dict(meta)},
        path,
    )


def load_classifier(path, map_location="cpu") -> Classifier:
    """Rebuild a classifier from a :func:`save_classifier` file (or from a training-state
    checkpoint of ``gcln_fast.training.classifier``, which holds the same keys); eval mode."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in CLASSIFIER_KINDS:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else None
        what = KINDS.get(found, "not a checkpoint of this package")
        raise ValueError(f"{path} is not a classifier checkpoint: it is {what}")
    model = build_classifier(ckpt["arch"], int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["state_dict"])
    model.meta = dict(ckpt.get("meta") or {})
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
