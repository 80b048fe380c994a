"""The generative cleaning network G (section 3.1-3.2 of the paper).

``Generator`` maps images in [0, 1] to images in [0, 1] (a *defence*, see
``docs/pipeline-interfaces.md``):

    x --QNT(q)--> x_q --conv encoder--> (stride 2) --[QNT on feature maps]--> residual blocks
      --> upsample --(skip from the full-resolution features)--> conv --> r
    G(x) = clamp(x_q + r, 0, 1)          (output="clamp", default)
    G(x) = sigmoid(logit(x_q) + r)       (output="sigmoid")

Design notes:

* The quantized nonlinear transform is the first layer (the paper's "QNT
  layer"). It is :class:`gcln_fast.QuantizedDCT` with ``backend="auto"``: the
  fused kernel of the input's device (the pure-PyTorch reference only where no
  compiled kernel is available). Its backward is straight-through, so BPDA
  through G is plain autograd.
* The residual is added to the *quantized* image ``x_q``, never to the raw
  input: a skip connection from ``x`` would hand the attack noise straight to
  the output. The last convolution is zero-initialised, so an untrained G is
  exactly ``clamp(QNT(x), 0, 1)``.
* ``qnt_features=True`` also puts a QuantizedDCT on the 16x16 feature maps
  after the strided convolution (the paper treats the layer "in the same way
  as the pooling layers"); feature maps are not 8-bit images, so that layer
  uses ``scale=1`` and its own step ``feature_q`` (in feature units).
* No batch normalisation: train and eval behave the same (the adaptive
  attacker and the DDP replicas see the same function) and there are no
  running buffers to synchronise.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layer import QuantizedDCT


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return x + self.c2(self.act(self.c1(x)))


class Generator(nn.Module):
    """Residual encoder-decoder cleaning network with the QNT layer on its input.

    Args:
        q: quantization step of the input QNT layer (8-bit pixel units).
        trainable_q: learn the step(s) of the QNT layer(s) (LSQ gradient, kept positive).
        per_frequency: one step per DCT frequency (an 8x8 table) instead of one scalar.
        width: channels of the full-resolution features (2*width at half resolution).
        blocks: residual blocks at half resolution.
        qnt_features: also quantize the half-resolution feature maps (see module docs).
        feature_q: step of the feature-map QNT layer (feature units, ``scale=1``).
        output: ``"clamp"`` (``clamp(x_q + r, 0, 1)``) or ``"sigmoid"`` (``sigmoid(logit(x_q) + r)``).
        backend: QNT backend; ``"auto"`` = the fused kernel for the input's device.
    """

    def __init__(
        self,
        q: float = 10.0,
        *,
        trainable_q: bool = False,
        per_frequency: bool = False,
        width: int = 32,
        blocks: int = 2,
        qnt_features: bool = False,
        feature_q: float = 0.1,
        output: str = "clamp",
        backend: str = "auto",
    ):
        super().__init__()
        if output not in ("clamp", "sigmoid"):
            raise ValueError(f"output must be 'clamp' or 'sigmoid', got {output!r}")
        if int(width) < 1 or int(blocks) < 0:
            raise ValueError("width must be >= 1 and blocks >= 0")
        self.config = {
            "q": float(q),
            "trainable_q": bool(trainable_q),
            "per_frequency": bool(per_frequency),
            "width": int(width),
            "blocks": int(blocks),
            "qnt_features": bool(qnt_features),
            "feature_q": float(feature_q),
            "output": str(output),
            "backend": str(backend),
        }
        w = int(width)
        self.output = output
        # An adaptive attacker may set this: the output clamp then passes gradients straight
        # through, so pixels pushed past [0, 1] by the residual do not get zero gradient (BPDA).
        self.straight_through_clamp = False
        self.qnt = QuantizedDCT(q, trainable=trainable_q, per_frequency=per_frequency, backend=backend)
        self.head = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.qnt_feat = (
            QuantizedDCT(feature_q, trainable=trainable_q, per_frequency=per_frequency, scale=1.0, backend=backend)
            if qnt_features
            else None
        )
        self.body = nn.Sequential(*[_ResBlock(2 * w) for _ in range(int(blocks))])
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.merge = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.LeakyReLU(0.2))
        self.tail = nn.Conv2d(w, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def residual(self, xq: torch.Tensor) -> torch.Tensor:
        h = self.head(xq - 0.5)
        z = self.down(h)
        if self.qnt_feat is not None:
            z = self.qnt_feat(z)
        z = self.body(z)
        u = self.up(z)
        if u.shape[-2:] != h.shape[-2:]:  # odd sizes: crop the upsampled map
            u = u[..., : h.shape[-2], : h.shape[-1]]
        return self.tail(self.merge(torch.cat([u, h], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.qnt(x)
        r = self.residual(xq)
        if self.output == "sigmoid":
            p = xq.clamp(1e-3, 1 - 1e-3)
            return torch.sigmoid(torch.log(p) - torch.log1p(-p) + r)
        out = xq + r
        if self.straight_through_clamp:  # value clamped, gradient as if unclamped
            return out + (out.clamp(0.0, 1.0) - out).detach()
        return out.clamp(0.0, 1.0)

    @property
    def q(self) -> torch.Tensor:
        """The current step(s) of the input QNT layer."""
        return self.qnt.q
