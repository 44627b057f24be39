"""CIFAR-10 python batches, unpickled through an allow-list: only what rebuilds numpy arrays may load."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ac_toolchain.data.registry import Raw, register_dataset
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}  # fmt: skip


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 [N, 3, 32, 32], int64 [N])."""
    try:
        with path.open("rb") as fh:
            batch = SafeUnpickler(fh, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    get = lambda key: batch.get(key.encode(), batch.get(key)) if isinstance(batch, dict) else None  # noqa: E731
    data, labels = get("data"), get("labels")
    if data is None or labels is None:
        raise DataError(f"{path} has no 'data' / 'labels' entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected data of shape [N, 3072] and N labels, got {data.shape} / {len(labels)}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _folder(path: Path) -> Path:
    return path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path


@register_dataset("cifar10", needs_path=True)
def cifar10(path: Path | None, shape: Shape, seed: int) -> Raw:
    assert path is not None
    folder = _folder(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)}")
    train = [load_batch(folder / n) for n in names[:5]]
    test_x, test_y = load_batch(folder / "test_batch")
    x = torch.from_numpy(np.concatenate([b[0] for b in train]))
    y = torch.from_numpy(np.concatenate([b[1] for b in train]))
    return Raw(x, y, 10, torch.from_numpy(test_x), torch.from_numpy(test_y))
