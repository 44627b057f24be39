"""Adapting images to a model's input shape, and per-channel normalisation.

Every dataset keeps its images raw (uint8 tensors in memory, or files on disk) and converts them one batch at a
time when they are fetched: channels 1 -> 3 by repetition or 3 -> 1 by luminance, zero-padded (centred) when the
image fits inside the model's input, else resized bilinearly, scaled to [0, 1], then normalised with the training
split's per-channel mean and std.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ac_toolchain.errors import DataError

Shape = tuple[int, int, int]  # (C, H, W)

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights Pillow's convert("L") uses too


def _one_to_three(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1)  # [N, 1, H, W] -> [N, 3, H, W] (a view; the pad / resize that follows copies)


def _three_to_one(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)  # [N, 3, H, W] -> [N, 1, H, W]


# (source channels, model channels) -> conversion; equal counts need none.
CHANNEL_MAPS: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor]] = {
    (1, 3): _one_to_three,
    (3, 1): _three_to_one,
}


def adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """float [N, c, H, W] -> [N, channels, H, W]."""
    have = x.shape[1]
    if have == channels:
        return x
    convert = CHANNEL_MAPS.get((have, channels))
    if convert is None:
        raise DataError(f"cannot adapt {have}-channel images to a {channels}-channel model (1 <-> 3 only)")
    return convert(x)


def adapt_size(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float [N, C, h, w] -> [N, C, height, width]: centred zero padding when it fits, else bilinear resize."""
    h, w = x.shape[2:]
    if h <= height and w <= width:  # e.g. MNIST 28 -> 32: 2 pixels each side
        top, left = (height - h) // 2, (width - w) // 2
        return F.pad(x, (left, width - w - left, top, height - h - top))
    shrinking = h > height or w > width  # antialias only matters (and only costs) when a side shrinks
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)


def adapt(images: torch.Tensor, shape: Shape) -> torch.Tensor:
    """uint8 [N, c, h, w] (0..255) -> float32 [N, *shape] in [0, 1], not yet normalised."""
    x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)
    c, h, w = shape
    return adapt_size(adapt_channels(x, c), h, w)


@dataclass(frozen=True)
class Normalise:
    """Per-channel ``(x - mean) / std``; fitted on the training split, applied unchanged to val and test."""

    mean: torch.Tensor  # float32 [C]
    std: torch.Tensor  # float32 [C]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, H, W]
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    @staticmethod
    def fit(batches: Iterable[torch.Tensor]) -> Normalise:
        """Exact per-channel mean and (population) std over adapted batches [B, C, H, W]; a std of 0 becomes 1."""
        total = squares = torch.zeros(0, dtype=torch.float64)
        count = 0
        for batch in batches:
            x = batch.to(torch.float64)
            sums, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))  # [C] each
            total, squares = (sums, sq) if count == 0 else (total + sums, squares + sq)
            count += x.shape[0] * x.shape[2] * x.shape[3]
        if count == 0:
            raise DataError("cannot compute normalisation statistics: the training split is empty")
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        return Normalise(mean.to(torch.float32), std.to(torch.float32))
