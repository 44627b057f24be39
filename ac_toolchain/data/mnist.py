"""``mnist:PATH``: the four standard idx files (each optionally gzipped), parsed and validated with numpy.

idx layout: two zero bytes, a dtype code, the number of dimensions, then each dimension as a big-endian uint32,
then the data, big-endian, row-major. Test = the t10k files; validation is carved (seeded) from train. PATH may
also be the torchvision root that holds ``MNIST/raw``. Fashion-MNIST and KMNIST use the same files.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ac_toolchain.data.datasets import TensorImages
from ac_toolchain.data.registry import Source, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError

IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
IMAGES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def _bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when it starts with the gzip magic (whatever its name)."""
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is a damaged gzip file ({exc}); download it again") from None


def _header(path: Path, data: bytes) -> tuple[np.dtype, list[int], int]:
    """-> (element dtype, dims, offset of the data)."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number {data[:4].hex() or 'empty'})")
    ndim, offset = data[3], 4 + 4 * data[3]
    if len(data) < offset:
        raise DataError(f"{path} is truncated: the header promises {ndim} dimensions but the file ends first")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64).tolist()
    return np.dtype(IDX_DTYPES[data[2]]), dims, offset


def read_idx(path: Path) -> np.ndarray:
    """One idx file (plain or gzipped) -> an array of its dtype and dims (native byte order)."""
    data = _bytes(path)
    dtype, dims, offset = _header(path, data)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        state = "truncated" if len(data) - offset < expected else "longer than its header says"
        raise DataError(f"{path} is {state}: dims {dims} need {expected} data bytes, found {len(data) - offset}")
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def find_idx(folder: Path, stem: str) -> Path:
    for base in (folder, folder / "MNIST" / "raw"):
        for candidate in (base / stem, base / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    needed = ", ".join([*IMAGES.values(), *LABELS.values()])
    raise DataError(f"mnist: {folder} has no {stem} (or {stem}.gz); the folder needs {needed}, each optionally .gz")


def _images(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise DataError(f"{path}: expected uint8 images [N, H, W], got {array.dtype} {list(array.shape)}")
    return torch.from_numpy(array).unsqueeze(1)  # uint8 [N, 1, H, W]


def _labels(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 1 or array.dtype.kind not in "iu" or (array.size and array.min() < 0):
        raise DataError(f"{path}: expected non-negative integer labels [N], got {array.dtype} {list(array.shape)}")
    return torch.from_numpy(array.astype(np.int64))  # int64 [N]


def _split(folder: Path, split: str) -> TensorImages:
    image_path, label_path = find_idx(folder, IMAGES[split]), find_idx(folder, LABELS[split])
    images, labels = _images(image_path), _labels(label_path)
    if len(images) != len(labels):
        raise DataError(f"mnist: {image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"mnist: {image_path} holds no images")
    return TensorImages(images, labels)


@register_dataset("mnist", arg="folder")
def mnist(arg: str | None, shape: Shape, seed: int) -> Source:
    folder = Path(str(arg)).expanduser()
    train, test = _split(folder, "train"), _split(folder, "test")
    if train.source_shape != test.source_shape:
        raise DataError(f"mnist: train images are {train.source_shape[1:]} but test images {test.source_shape[1:]}")
    num_classes = int(torch.cat([train.labels, test.labels]).max()) + 1  # 10 for MNIST; EMNIST letters: 27
    return Source(train, num_classes=num_classes, test=test)
