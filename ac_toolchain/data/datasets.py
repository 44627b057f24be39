"""Image stores (where the raw pixels live) and the split datasets that adapt them one batch at a time.

A store holds every image of a source with its labels; an ``ImageDataset`` is one split of it: a store, the
indices it owns, the model's input shape and the training split's normalisation. ``DataLoader`` fetches a whole
batch through ``__getitems__``, so adapting and normalising is one tensor operation per batch, not per image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from ac_toolchain.data.transforms import Normalise, Shape, adapt
from ac_toolchain.errors import DataError

Item = tuple[torch.Tensor, torch.Tensor]  # (float32 [C, H, W], int64 [])


class ImageStore(ABC):
    """All images of one source. Subclasses set ``labels`` (int64 [N]) and ``source_shape`` (C, H, W)."""

    labels: torch.Tensor
    source_shape: Shape
    # At most this many (seeded, random) training images are read to fit the normalisation; None = all of them.
    # In-memory stores use all; stores that decode files sample, so that loading stays quick.
    stats_limit: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def load(self, indices: torch.Tensor, shape: Shape) -> torch.Tensor:
        """int64 [B] -> float32 [B, *shape] in [0, 1]: adapted, not normalised."""


class TensorImages(ImageStore):
    """uint8 images [N, C, H, W] and int64 labels [N], kept in memory as they are."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.to(torch.int64)
        c, h, w = images.shape[1:]
        self.source_shape = (c, h, w)

    def load(self, indices: torch.Tensor, shape: Shape) -> torch.Tensor:
        return adapt(self.images[indices], shape)  # uint8 [B, c, h, w] -> float32 [B, *shape]


class ImageDataset(Dataset[Item]):
    """One split: ``store`` images at ``indices`` (int64 [M]), adapted to ``shape`` and normalised."""

    def __init__(self, store: ImageStore, indices: torch.Tensor, shape: Shape, normalise: Normalise) -> None:
        self.store, self.indices, self.shape, self.normalise = store, indices.to(torch.int64), shape, normalise
        self.labels = store.labels[self.indices]  # int64 [M]

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in this split -> (float32 [B, *shape] normalised, int64 [B])."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        x = self.store.load(self.indices[positions], self.shape)
        return self.normalise(x), self.labels[positions]

    def __getitem__(self, i: int) -> Item:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a split of {len(self)} images")
        x, y = self.batch([i])
        return x[0], y[0]

    def __getitems__(self, positions: list[int]) -> list[Item]:
        """DataLoader's batched fetch: one adapt + normalise for the batch; default_collate stacks the pairs."""
        x, y = self.batch(positions)
        return list(zip(x, y, strict=True))

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))
