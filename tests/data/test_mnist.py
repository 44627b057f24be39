"""MNIST: idx files made on the fly (plain and gzipped), corrupt files, and the bundled mnist-mini."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ac_toolchain.data import load_dataset
from ac_toolchain.data.mnist import read_idx
from ac_toolchain.errors import DataError


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    assert np.array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), arrays["t10k-images-idx3-ubyte"])
    splits = load_dataset(f"mnist:{tmp_path}", (1, 28, 28), val_fraction=0.2, test_fraction=0.0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)
    test = splits.test
    raw = test.raw(list(range(10)))  # type: ignore[attr-defined]
    assert torch.equal(raw[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.uint8)))
    assert test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()  # type: ignore[attr-defined]
    x, y = test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(bad)
    make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="is truncated"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_missing_file_is_named(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_count_mismatch(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29))
    with pytest.raises(DataError, match="differ in count"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_mnist_mini_splits_are_seeded_disjoint_and_complete() -> None:
    a = load_dataset("mnist-mini", (1, 28, 28), seed=0)
    b = load_dataset("mnist-mini", (1, 28, 28), seed=0)
    c = load_dataset("mnist-mini", (1, 28, 28), seed=1)
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sizes == (3500, 500, 1000) and a.num_classes == 10 and a.source_shape == (1, 28, 28)
    ids = [set(s.indices.tolist()) for s in (a.train, a.val, a.test)]  # type: ignore[attr-defined]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 5000
    assert torch.equal(a.test.indices, b.test.indices)  # type: ignore[attr-defined]
    assert not torch.equal(a.test.indices, c.test.indices)  # type: ignore[attr-defined]
    assert set(a.test.labels.tolist()) == set(range(10))  # type: ignore[attr-defined]


def test_mnist_mini_takes_no_path() -> None:
    with pytest.raises(DataError, match="takes no PATH"):
        load_dataset("mnist-mini:/tmp", (1, 28, 28))
