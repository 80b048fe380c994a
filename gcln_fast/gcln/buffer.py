"""The on-the-fly clean set of section 3.3: recovered images that C classifies correctly."""

from __future__ import annotations

import torch
from torch import nn


class CleanBuffer:
    """Bounded FIFO of recovered images that C classified correctly (the on-the-fly part of Omega^o)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.images: torch.Tensor | None = None  # (capacity, C, H, W) float32 on CPU (exactly what C judged)
        self.size = 0
        self.head = 0
        self.added = 0  # total ever added

    def add(self, images: torch.Tensor, keep: torch.Tensor) -> int:
        """Add ``images[keep]`` (``keep`` a boolean mask); returns how many were added."""
        if self.capacity <= 0:
            return 0
        sel = images[keep.to(images.device)].detach().to("cpu", torch.float32)
        n = int(sel.shape[0])
        if n == 0:
            return 0
        if self.images is None:
            self.images = torch.zeros((self.capacity, *sel.shape[1:]), dtype=torch.float32)
        sel = sel[-self.capacity :]
        idx = (self.head + torch.arange(sel.shape[0])) % self.capacity
        self.images[idx] = sel
        self.head = int((self.head + sel.shape[0]) % self.capacity)
        self.size = min(self.capacity, self.size + sel.shape[0])
        self.added += n
        return n

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        if self.size == 0 or n <= 0:
            return None
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return self.images[idx].float()

    def state_dict(self) -> dict:
        images = self.images[: self.size].clone() if self.images is not None else torch.zeros(0)
        return {"capacity": self.capacity, "images": images, "head": self.head, "added": self.added}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = int(state["capacity"])
        imgs = state["images"]
        self.size = int(imgs.shape[0]) if imgs.dim() == 4 else 0
        self.head = int(state["head"])
        self.added = int(state["added"])
        if self.size:
            self.images = torch.zeros((self.capacity, *imgs.shape[1:]), dtype=torch.float32)
            self.images[: self.size] = imgs.to(torch.float32)
        else:
            self.images = None


@torch.no_grad()
def update_clean_buffer(
    buffer: CleanBuffer, classifier: nn.Module, recovered: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Add the recovered images that ``classifier`` gets right to ``buffer``; returns the correctness mask."""
    correct = classifier(recovered).argmax(dim=1) == labels
    buffer.add(recovered, correct)
    return correct
