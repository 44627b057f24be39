"""``PATH/<class>/<image>``: classes are the sorted sub-folder names. With ``PATH/train`` and ``PATH/test``
present those are the splits (validation is carved from train). Images are decoded with Pillow, resized to the
model's input size on load and kept in memory as uint8 (RGB, or greyscale for a 1-channel model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ac_toolchain.data.registry import Raw, register_dataset
from ac_toolchain.data.transforms import Shape, adapt
from ac_toolchain.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _read(path: Path, shape: Shape) -> torch.Tensor:
    """One image -> uint8 [C, H, W] at the model's input shape."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if shape[0] == 1 else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    x = torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)[None]
    return (adapt(x, shape)[0] * 255).round().to(torch.uint8)


def _scan(root: Path, shape: Shape, classes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {root} has no class folders (expected {root}/<class>/<image>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(f"imagefolder: class folder {root / name} has no images ({', '.join(sorted(EXTENSIONS))})")
        images += [_read(f, shape) for f in files]
        labels += [label] * len(files)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes


@register_dataset("imagefolder", needs_path=True)
def imagefolder(path: Path | None, shape: Shape, seed: int) -> Raw:
    assert path is not None
    if not path.is_dir():
        raise DataError(f"imagefolder: {path} is not a folder")
    if (path / "train").is_dir() and (path / "test").is_dir():
        x, y, classes = _scan(path / "train", shape)
        tx, ty, _ = _scan(path / "test", shape, classes)
        return Raw(x, y, len(classes), tx, ty)
    x, y, classes = _scan(path, shape)
    return Raw(x, y, len(classes))
