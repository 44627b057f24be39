"""``mnist:PATH``: idx files written on the fly (plain and gzipped), then corrupted in the ways real files are."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ac_toolchain.data import load_dataset
from ac_toolchain.data.mnist import read_idx
from ac_toolchain.errors import DataError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array.astype(np.uint8))
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_pixels_and_labels_round_trip_exactly(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path, gz=gz)
    splits = load_dataset(f"mnist:{tmp_path}", (1, 28, 28), val_fraction=0.2, test_fraction=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)  # test = t10k; val from train
    assert splits.num_classes == 10 and splits.source_shape == (1, 28, 28) and splits.name == "mnist"
    test_store = splits.test.store
    assert torch.equal(test_store.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))  # type: ignore[attr-defined]
    assert splits.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    train_ids = torch.cat([splits.train.indices, splits.val.indices]).sort().values
    assert torch.equal(train_ids, torch.arange(30))
    x, y = splits.test[4]  # un-normalise and compare with the file's pixels
    stats = splits.train.normalise
    assert torch.allclose(
        x * stats.std + stats.mean, torch.from_numpy(arrays["t10k-images-idx3-ubyte"][4]) / 255, atol=1e-5
    )
    assert int(y) == arrays["t10k-labels-idx1-ubyte"][4]


def test_adapted_to_32x32_rgb_and_batched(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    splits = load_dataset(f"mnist:{tmp_path}", (3, 32, 32))
    x, y = next(iter(DataLoader(splits.train, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,) and y.dtype == torch.int64
    padding = x[:, :, :2]  # 2 rows of zero padding, normalised like every other pixel
    assert torch.allclose(padding, padding[:1, :, :1, :1].expand_as(padding))


def test_read_idx_keeps_dtype_and_byte_order(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    (tmp_path / "ints").write_bytes(idx_bytes(values, code=0x0C))
    out = read_idx(tmp_path / "ints")
    assert out.dtype == np.int32 and out.dtype.isnative and np.array_equal(out, values)


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    (tmp_path / "renamed").write_bytes(gzip.compress(idx_bytes(data)))
    assert np.array_equal(read_idx(tmp_path / "renamed"), data)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x01\x02\x03\x04rest", "bad magic number 01020304"),
        (b"", "bad magic number empty"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "bad magic number 00000701"),  # unknown dtype code
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated: the header promises 3 dimensions"),
        (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "truncated: dims [4, 5] need 20 data bytes, found 17"),
        (idx_bytes(np.zeros((4, 5), np.uint8)) + b"xx", "longer than its header says"),
        (gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8)))[:-6], "damaged gzip file"),
    ],
)
def test_corrupt_idx_files_are_named(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_truncated_file_stops_load_dataset(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_missing_file_is_named(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has 30 images but .*train-labels-idx1-ubyte has 29"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_swapped_files_are_refused(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected uint8 images \[N, H, W\]"):
        load_dataset(f"mnist:{tmp_path}", (1, 28, 28))


def test_torchvision_layout(tmp_path: Path) -> None:
    make_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert len(load_dataset(f"mnist:{tmp_path}", (1, 28, 28)).test) == 10
