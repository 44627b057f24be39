"""``synthetic`` / ``synthetic:N`` (for tests): N images (default 512) of 10 classes, made at the model's input
shape, deterministic for a seed.

Each class has a fixed random template: a coarse 4x4 pattern per channel, upsampled to the input size so that
it survives convolution and pooling. An image is its class's template plus per-pixel uniform noise, so a tiny CNN
(or a nearest-class-mean rule) separates the classes well above chance after one epoch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ac_toolchain.data.datasets import TensorImages
from ac_toolchain.data.registry import Source, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError

NUM_CLASSES = 10
DEFAULT_COUNT = 512
TEMPLATE_GRID = 4  # template detail: a TEMPLATE_GRID x TEMPLATE_GRID pattern per channel
CHUNK = 2048  # images generated at a time
NOISE = 0.5  # images are 0.5 * template + NOISE * uniform noise, in [0, 1]


def _count(arg: str | None) -> int:
    text = DEFAULT_COUNT if arg is None else arg
    if not str(text).isdigit() or int(text) < NUM_CLASSES:
        raise DataError(f"synthetic takes an image count of at least {NUM_CLASSES}: --data synthetic:N, got {arg!r}")
    return int(text)


def make_images(n: int, shape: Shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (uint8 images [n, *shape], int64 labels [n], classes in turn 0, 1, ..., 9, 0, ...)."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(NUM_CLASSES, c, TEMPLATE_GRID, TEMPLATE_GRID, generator=gen)  # [10, C, 4, 4]
    templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # [10, C, H, W]
    labels = torch.arange(n) % NUM_CLASSES  # [n]
    images = torch.empty(n, c, h, w, dtype=torch.uint8)
    for start in range(0, n, CHUNK):  # float copies of one chunk at a time, not of all n images
        part = labels[start : start + CHUNK]
        noise = torch.rand(len(part), c, h, w, generator=gen)  # [B, C, H, W]
        x = (1 - NOISE) * templates[part] + NOISE * noise  # [B, C, H, W] in [0, 1]
        images[start : start + len(part)] = (x * 255).round().to(torch.uint8)
    return images, labels


@register_dataset("synthetic", arg="text")
def synthetic(arg: str | None, shape: Shape, seed: int) -> Source:
    images, labels = make_images(_count(arg), shape, seed)
    return Source(TensorImages(images, labels), num_classes=NUM_CLASSES)
