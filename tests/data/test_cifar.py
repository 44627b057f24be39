"""CIFAR-10 python batches made on the fly; a malicious pickle is refused without running."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ac_toolchain.data import load_dataset
from ac_toolchain.errors import DataError


def make_cifar(folder: Path, per_batch: int = 6) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
        first = data if first is None else first
        batch = {b"batch_label": name.encode(), b"labels": list(range(per_batch)), b"data": data}
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)
    assert first is not None
    return first


def test_batches_load_with_exact_pixels(tmp_path: Path) -> None:
    first = make_cifar(tmp_path / "cifar-10-batches-py")
    splits = load_dataset(f"cifar10:{tmp_path}", (3, 32, 32), val_fraction=0.2)  # parent folder accepted
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 6)
    assert splits.source_shape == (3, 32, 32)
    images = splits.train.images  # type: ignore[attr-defined]
    assert torch.equal(images[0], torch.from_numpy(first[0].reshape(3, 32, 32)))
    x, _ = splits.test[0]
    assert x.shape == (3, 32, 32)


def test_adapted_to_a_one_channel_model(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    x, _ = load_dataset(f"cifar10:{tmp_path}", (1, 28, 28)).train[0]
    assert x.shape == (1, 28, 28)


class Evil:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("touch EVIL_MARKER",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar(tmp_path)
    with (tmp_path / "data_batch_3").open("wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="refusing to unpickle posix.system"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    assert not (tmp_path / "EVIL_MARKER").exists()


def test_missing_batches_and_bad_contents(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks test_batch"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="is not a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))


def test_needs_a_path() -> None:
    with pytest.raises(DataError, match=r"cifar10 needs a folder: --data cifar10:PATH"):
        load_dataset("cifar10", (3, 32, 32))
