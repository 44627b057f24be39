"""Adapting images to a model's input shape, and the datasets that apply it per batch.

Images are kept as uint8 [N, C, H, W] in memory (CIFAR-10: 180 MB); each batch is converted when it is
fetched: channels 1 -> 3 by repetition or 3 -> 1 by luminance, zero-padded (centred) when it fits, else
resized bilinearly, scaled to [0, 1] and normalised with the training split's per-channel mean and std.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
Shape = tuple[int, int, int]  # (C, H, W)


def adapt(images: torch.Tensor, shape: Shape) -> torch.Tensor:
    """uint8 or float [N, C, H, W] -> float [N, *shape] in [0, 1] (before normalisation)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    c, h, w = shape
    if x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and c == 1:
        x = (x * LUMA).sum(dim=1, keepdim=True)
    elif x.shape[1] != c:
        x = x.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
    ih, iw = x.shape[2:]
    if ih <= h and iw <= w:
        top, left = (h - ih) // 2, (w - iw) // 2
        return F.pad(x, (left, w - iw - left, top, h - ih - top))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class Normalise:
    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    @staticmethod
    def fit(batch: torch.Tensor) -> Normalise:
        """Per-channel statistics of an adapted batch [N, C, H, W] (a std of 0 becomes 1)."""
        std = batch.std(dim=(0, 2, 3))
        return Normalise(batch.mean(dim=(0, 2, 3)), torch.where(std > 0, std, torch.ones_like(std)))


class BatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Base: subclasses provide ``raw(indices) -> uint8/float [B, C, H, W]`` and ``labels`` [N]."""

    labels: torch.Tensor
    shape: Shape
    normalise: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda x: x)

    def raw(self, indices: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted, normalised images [B, *shape] and labels [B]."""
        return self.normalise(adapt(self.raw(indices), self.shape)), self.labels[indices]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batched fetch for DataLoader: one adapt / normalise call per batch, not per image."""
        x, y = self.batch(list(indices))
        return list(zip(x, y, strict=True))


class TensorImages(BatchDataset):
    """In-memory images [N, C, H, W] (uint8) with labels [N], viewed through an index subset."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, shape: Shape) -> None:
        self.images, self.all_labels, self.indices, self.shape = images, labels, indices, shape
        self.labels = labels[indices]

    def raw(self, indices: list[int]) -> torch.Tensor:
        return self.images[self.indices[indices]]
