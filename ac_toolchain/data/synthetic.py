"""``synthetic[:N]`` (tests only): N images of 10 classes, each class a fixed random template plus noise,
generated directly at the model's input shape, deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ac_toolchain.data.registry import Raw, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError


@register_dataset("synthetic", needs_path=False)
def synthetic(path: Path | None, shape: Shape, seed: int) -> Raw:
    text = str(path) if path is not None else "512"
    if not text.isdigit() or int(text) < 10:
        raise DataError(f"synthetic takes an image count of at least 10 (synthetic:N), got {text!r}")
    n, gen = int(text), torch.Generator().manual_seed(seed)
    templates = torch.rand(10, *shape, generator=gen)  # [10, C, H, W]
    labels = torch.arange(n) % 10
    noise = torch.rand(n, *shape, generator=gen) * 0.5
    images = ((0.5 * templates[labels] + noise) * 255).to(torch.uint8)
    return Raw(images, labels, 10)
