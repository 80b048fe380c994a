"""Figure 2 of the paper: the classifier's last spatial activation and its Grad-CAM heatmap for
clean, attacked and cleaned images, side by side (forward/backward hooks, no extra dependency).

The paper takes "the feature map from the activation layer, the third from the last layer in the
network": in a ResNet that is the last activation before global pooling and the linear head. Here
it is found by hooks as the last 4-D output with a spatial size above 1 in the forward pass (for
``resnet20`` the output of its third stage, 64 x 8 x 8). Grad-CAM (Selvaraju et al. 2017): the
channels of that activation weighted by the spatial mean of the predicted class score's gradient,
summed, ReLU, upsampled to the image and scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.io import atomic_write_json


def _last_activation(model: nn.Module, x: torch.Tensor):
    """(logits, the last 4-D activation with spatial size > 1, its module name), activation kept in the graph."""
    seen = []

    def hook(name):
        def fn(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 1:
                seen.append((name, output))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("the classifier produced no spatial (N, C, H, W) activation to show")
    name, act = seen[-1]
    return logits, act, name


def grad_cam(model: nn.Module, x: torch.Tensor):
    """(predicted classes, channel-mean feature maps (N, h, w), Grad-CAM heatmaps (N, H, W) in [0, 1], layer name)."""
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits, act, name = _last_activation(model, x)
            pred = logits.argmax(1)
            score = logits.gather(1, pred[:, None]).sum()
            (g,) = torch.autograd.grad(score, act)
    finally:
        model.train(was)
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return pred.detach(), act.detach().mean(1), cam, name


def feature_maps_figure(classifier, clean, attacked, cleaned, labels, path, *, class_names=None, title=None) -> dict:
    """Write Figure 2 (PNG + JSON): for each image, rows clean / attacked / cleaned; columns the image
    with C's prediction, the feature map, the Grad-CAM heatmap and the heatmap over the image."""
    from .plots import _plt

    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = {"clean": clean, "attacked": attacked, "cleaned by G": cleaned}
    maps = {k: grad_cam(classifier, v) for k, v in kinds.items()}
    n = clean.shape[0]
    name = lambda c: class_names[c] if class_names else str(c)  # noqa: E731
    fig, axes = plt.subplots(3 * n, 4, figsize=(7.2, 1.8 * 3 * n), squeeze=False)
    for i in range(n):
        for r, (kind, imgs) in enumerate(kinds.items()):
            pred, fmap, cam, _ = maps[kind]
            img = imgs[i].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
            row = axes[3 * i + r]
            row[0].imshow(img, interpolation="nearest")
            row[0].set_title(f"{kind}: {name(int(pred[i]))}", fontsize=7)
            row[1].imshow(fmap[i].cpu().numpy(), cmap="viridis")
            row[2].imshow(cam[i].cpu().numpy(), cmap="jet", vmin=0, vmax=1)
            row[3].imshow(img, interpolation="nearest")
            row[3].imshow(cam[i].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    for ax, t in zip(axes[0], ("image (prediction)", "feature map", "Grad-CAM", "overlay"), strict=True):
        ax.set_xlabel(t, fontsize=7)
        ax.xaxis.set_label_position("top")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    data = {
        "layer": maps["clean"][3],
        "labels": [int(v) for v in labels[:n]],
        "predictions": {k: [int(p) for p in m[0]] for k, m in maps.items()},
        "cam_distance_to_clean": {
            k: float((m[2] - maps["clean"][2]).abs().mean()) for k, m in maps.items() if k != "clean"
        },
    }
    atomic_write_json(path.with_suffix(".json"), data)
    return {"png": path, "json": path.with_suffix(".json"), **data}
