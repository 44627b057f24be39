"""``cifar10:PATH``: the CIFAR-10 python batches, unpickled through an allow-list.

A pickle can call any importable function while it loads, so these files are read by an unpickler whose
``find_class`` hands out only what rebuilds numpy arrays (a fixed table of objects, nothing imported by name);
any other global raises ``DataError`` before it is called. PATH is the folder with ``data_batch_1..5`` and
``test_batch``, or its parent holding ``cifar-10-batches-py``. Test = test_batch; val is carved from train.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ac_toolchain.data.datasets import TensorImages
from ac_toolchain.data.registry import Source, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
LATIN1_NAMES = {"latin1", "latin_1", "iso8859_1", "iso_8859_1", "l1"}


def _numpy_core(module: str) -> Any:
    """numpy 2 moved numpy.core to numpy._core; pickles name either."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{module}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call to rebuild bytes; only the latin-1 codec is allowed."""
    if encoding.lower().replace("-", "_") not in LATIN1_NAMES:
        raise DataError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_multiarray, _numeric = _numpy_core("multiarray"), _numpy_core("numeric")
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _package in ("numpy.core", "numpy._core"):  # protocols 2-4 use _reconstruct, protocol 5 uses _frombuffer
    SAFE_GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    SAFE_GLOBALS[(f"{_package}.multiarray", "scalar")] = _multiarray.scalar
    SAFE_GLOBALS[(f"{_package}.numeric", "_frombuffer")] = _numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = SAFE_GLOBALS.get((module, name))
        if found is None:
            raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy arrays and lists")
        return found


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as fh:
            batch = SafeUnpickler(fh, encoding="bytes").load()  # the original files were pickled by Python 2
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict)")
    return batch


def _entry(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """batch[b"key"] or batch["key"]: Python 2 pickles read with encoding="bytes" have bytes keys."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DataError(f"{path} has no {key!r} entry (keys: {sorted(map(str, batch))})")


def load_batch(path: Path) -> TensorImages:
    """One batch file -> uint8 images [N, 3, 32, 32] and int64 labels [N], checked."""
    batch = _unpickle(path)
    data, labels = np.asarray(_entry(batch, "data", path)), np.asarray(_entry(batch, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected uint8 data [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected {len(data)} integer labels, got {labels.dtype} {list(labels.shape)}")
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise DataError(f"{path}: labels must be 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # rows are R (1024), G, B planes, row-major
    return TensorImages(images, torch.from_numpy(labels.astype(np.int64)))


def batch_folder(path: Path) -> Path:
    nested = path / "cifar-10-batches-py"
    folder = nested if nested.is_dir() else path
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)} (PATH is cifar-10-batches-py or its parent)")
    return folder


@register_dataset("cifar10", arg="folder")
def cifar10(arg: str | None, shape: Shape, seed: int) -> Source:
    folder = batch_folder(Path(str(arg)).expanduser())
    train = [load_batch(folder / name) for name in TRAIN_BATCHES]
    pool = TensorImages(torch.cat([b.images for b in train]), torch.cat([b.labels for b in train]))
    return Source(pool, num_classes=NUM_CLASSES, test=load_batch(folder / TEST_BATCH))
