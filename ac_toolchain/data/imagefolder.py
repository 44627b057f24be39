"""``imagefolder:PATH``: ``PATH/<class>/<image>``, classes numbered in sorted name order, decoded lazily.

Loading only reads each file's header (to catch unreadable files early and learn its pixel mode and size);
pixels are decoded with Pillow when a batch is fetched, so large folders need no memory up front.

Colour mode: if every image is greyscale (Pillow modes 1, L, LA) the source has 1 channel and images decode as
"L"; if any image has colour (RGB, RGBA, P, CMYK, ...) every image decodes as "RGB". The registry's adaptation
then maps the source channels to the model's (1 -> 3 by repetition, 3 -> 1 by luminance). 16-bit and float
images are refused. Images may differ in size: each is padded or resized to the model's input on its own, and
``source_shape`` reports the first image's size.

If ``PATH/train`` exists the folder is read as splits: ``train`` defines the classes, and ``val`` / ``test``
(optional, with class folders named as in train) are used as given; missing ones are carved from train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ac_toolchain.data.datasets import ImageStore
from ac_toolchain.data.registry import Source, register_dataset
from ac_toolchain.data.transforms import Shape, adapt
from ac_toolchain.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
MODE_CHANNELS: dict[str, int] = {
    **dict.fromkeys(("1", "L", "LA", "La"), 1),
    **dict.fromkeys(("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"), 3),
}
DECODE_MODE = {1: "L", 3: "RGB"}  # source channels -> the Pillow mode every image is converted to
SPLIT_FOLDERS = {"pool": "train", "val": "val", "test": "test"}
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


class FileImages(ImageStore):
    """Image files with int64 labels [N], decoded as ``DECODE_MODE[channels]`` when fetched."""

    stats_limit = 2048  # decoding is slow: fit the normalisation on a seeded sample of the training images

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, size: tuple[int, int]) -> None:
        self.files, self.labels, self.mode = files, labels, DECODE_MODE[channels]
        self.source_shape = (channels, *size)

    def decode(self, path: Path) -> torch.Tensor:
        """One file -> uint8 [1, C, h, w]."""
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert(self.mode))  # [h, w] for L, [h, w, 3] for RGB
        except READ_ERRORS as exc:
            raise DataError(f"imagefolder: cannot read image {path}: {exc}") from None
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1).copy()).permute(2, 0, 1).unsqueeze(0)

    def load(self, indices: torch.Tensor, shape: Shape) -> torch.Tensor:
        images = [adapt(self.decode(self.files[i]), shape) for i in indices.tolist()]  # each [1, *shape]
        return torch.cat(images) if images else torch.empty(0, *shape)


@dataclass(frozen=True)
class Scan:
    files: list[Path]
    labels: list[int]
    channels: int  # 3 if any image has colour, else 1
    size: tuple[int, int]  # (H, W) of the first image


def probe(path: Path) -> tuple[int, tuple[int, int]]:
    """Read only the header -> (channels of its mode, (H, W)); unreadable files and odd modes are errors."""
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
    except READ_ERRORS as exc:
        raise DataError(f"imagefolder: cannot read image {path}: {exc}") from None
    if mode not in MODE_CHANNELS:
        raise DataError(f"imagefolder: {path} has Pillow mode {mode!r} (16-bit or float?); save it as 8-bit L or RGB")
    return MODE_CHANNELS[mode], (height, width)


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"imagefolder: class folder {folder} has no images ({', '.join(sorted(EXTENSIONS))})")
    return files


def scan(root: Path, classes: list[str]) -> Scan:
    """Every image under root/<class>/, labelled by its class's index in ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    if not class_folders(root):
        raise DataError(f"imagefolder: {root} has no class folders (expected {root}/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    for name in class_folders(root):
        if name not in index:
            raise DataError(f"imagefolder: {root / name} is not one of the training classes ({', '.join(classes)})")
        found = image_files(root / name)
        files += found
        labels += [index[name]] * len(found)
    probes = [probe(f) for f in files]
    return Scan(files, labels, max(c for c, _ in probes), probes[0][1])


def split_roots(root: Path) -> dict[str, Path]:
    """{"pool": folder to split[, "val": ..., "test": ...]}: PATH itself, or PATH/train with its siblings."""
    if not (root / "train").is_dir():
        return {"pool": root}
    return {key: root / name for key, name in SPLIT_FOLDERS.items() if (root / name).is_dir()}


@register_dataset("imagefolder", arg="folder")
def imagefolder(arg: str | None, shape: Shape, seed: int) -> Source:
    roots = split_roots(Path(str(arg)).expanduser())
    classes = class_folders(roots["pool"])
    scans = {key: scan(folder, classes) for key, folder in roots.items()}
    channels = max(s.channels for s in scans.values())  # one colour mode for all splits
    stores = {key: FileImages(s.files, torch.tensor(s.labels), channels, s.size) for key, s in scans.items()}
    return Source(stores["pool"], num_classes=len(classes), val=stores.get("val"), test=stores.get("test"))
