"""``cifar10:PATH``: batches pickled on the fly as the real files are; malicious pickles are refused unrun."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ac_toolchain.data import load_dataset
from ac_toolchain.data.cifar import TEST_BATCH, TRAIN_BATCHES, load_batch
from ac_toolchain.errors import DataError


def write_batch(path: Path, data: object, labels: object, protocol: int = 2, str_keys: bool = False) -> None:
    keys = ("batch_label", "labels", "data") if str_keys else (b"batch_label", b"labels", b"data")
    with path.open("wb") as fh:
        pickle.dump(dict(zip(keys, (b"a batch", labels, data), strict=True)), fh, protocol=protocol)


def make_cifar(folder: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batches[name] = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        write_batch(folder / name, batches[name], [i % 10 for i in range(per_batch)])
    return batches


def test_batches_load_with_exact_pixels(tmp_path: Path) -> None:
    batches = make_cifar(tmp_path / "cifar-10-batches-py")
    splits = load_dataset(f"cifar10:{tmp_path}", (3, 32, 32), val_fraction=0.2)  # the parent folder is accepted
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 6)
    assert splits.source_shape == (3, 32, 32) and splits.num_classes == 10
    pool = splits.train.store.images  # type: ignore[attr-defined]
    assert torch.equal(pool[6], torch.from_numpy(batches["data_batch_2"][0].reshape(3, 32, 32)))
    test_image = torch.from_numpy(batches[TEST_BATCH][5].reshape(3, 32, 32)).float() / 255
    x, y = splits.test[5]
    stats = splits.train.normalise
    assert torch.allclose(x * stats.std.view(3, 1, 1) + stats.mean.view(3, 1, 1), test_image, atol=1e-5)
    assert int(y) == 5


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("str_keys", [False, True])
def test_every_pickle_protocol_and_key_type(tmp_path: Path, protocol: int, str_keys: bool) -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    write_batch(tmp_path / "b", data, np.array([3, 7]), protocol=protocol, str_keys=str_keys)
    store = load_batch(tmp_path / "b")
    assert torch.equal(store.images.reshape(2, 3072), torch.from_numpy(data)) and store.labels.tolist() == [3, 7]


def test_adapted_to_a_one_channel_model_in_batches(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    splits = load_dataset(f"cifar10:{tmp_path}", (1, 28, 28))
    x, y = next(iter(DataLoader(splits.train, batch_size=5)))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (5,) and y.dtype == torch.int64


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    marker = tmp_path / "EVIL_MARKER"
    with (tmp_path / "data_batch_3").open("wb") as fh:
        pickle.dump({b"data": Evil(marker), b"labels": [0]}, fh)
    with pytest.raises(DataError, match=r"data_batch_3: refusing to unpickle (posix|os|nt)\.system"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    assert not marker.exists()
    pickle.loads((tmp_path / "data_batch_3").read_bytes())  # the same file run by plain pickle: proves the test
    assert marker.exists()


@pytest.mark.parametrize("payload", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")])
def test_other_globals_are_refused(tmp_path: Path, payload: tuple[str, str]) -> None:
    module, name = payload
    (tmp_path / "b").write_bytes(f"c{module}\n{name}\n(S'1'\ntR.".encode())  # protocol-0 GLOBAL + REDUCE
    with pytest.raises(DataError, match=f"refusing to unpickle {module}.{name}"):
        load_batch(tmp_path / "b")


def test_codecs_encode_only_for_latin1(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(DataError, match="encoding 'rot13'"):
        load_batch(tmp_path / "b")


def test_missing_batches_and_bad_contents(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / TEST_BATCH).unlink()
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataError, match="lacks data_batch_4, test_batch"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    make_cifar(tmp_path)
    (tmp_path / TEST_BATCH).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch is not a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))


@pytest.mark.parametrize(
    ("data", "labels", "needle"),
    [
        (np.zeros((2, 3072), np.uint8), [0], "expected 2 integer labels"),
        (np.zeros((2, 100), np.uint8), [0, 1], "expected uint8 data [N, 3072]"),
        (np.zeros((2, 3072), np.float32), [0, 1], "expected uint8 data [N, 3072]"),
        (np.zeros((2, 3072), np.uint8), [0, 10], "labels must be 0..9"),
    ],
)
def test_malformed_batches(tmp_path: Path, data: np.ndarray, labels: list[int], needle: str) -> None:
    write_batch(tmp_path / "b", data, labels)
    with pytest.raises(DataError) as err:
        load_batch(tmp_path / "b")
    assert needle in str(err.value)


def test_missing_key_and_non_dict(tmp_path: Path) -> None:
    with (tmp_path / "b").open("wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, fh)
    with pytest.raises(DataError, match="has no 'labels' entry"):
        load_batch(tmp_path / "b")
    (tmp_path / "b").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="a list, not a dict"):
        load_batch(tmp_path / "b")
