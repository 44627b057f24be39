"""ImageDataset over an in-memory store: single items, batched fetch, DataLoader collation."""

import pytest
import torch
from torch.utils.data import DataLoader

from ac_toolchain.data.datasets import ImageDataset, TensorImages
from ac_toolchain.data.transforms import Normalise
from ac_toolchain.errors import DataError


def make_dataset(n: int = 20) -> ImageDataset:
    images = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8)
    store = TensorImages(images, torch.arange(n) % 3)
    stats = Normalise(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
    return ImageDataset(store, torch.arange(0, n, 2), (3, 8, 8), stats)  # every other image, 1 -> 3 ch, pad 6 -> 8


def test_items_are_adapted_and_normalised() -> None:
    ds = make_dataset()
    assert len(ds) == 10
    x, y = ds[3]  # store image 6
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == ()
    raw = ds.store.images[6, 0].float() / 255  # type: ignore[attr-defined]
    assert torch.allclose(x[1, 1:7, 1:7], (raw - 0.5) / 0.25) and torch.all(x[:, 0] == -2.0)  # padding: (0-.5)/.25
    assert int(y) == 6 % 3
    assert torch.equal(ds[-1][0], ds[9][0])


def test_out_of_range_index_raises_index_error() -> None:
    with pytest.raises(IndexError):
        make_dataset()[10]
    assert len(list(make_dataset())) == 10  # iteration stops cleanly


def test_getitems_matches_getitem() -> None:
    ds = make_dataset()
    pairs = ds.__getitems__([4, 0, 7])
    for (x, y), i in zip(pairs, [4, 0, 7], strict=True):
        assert torch.equal(x, ds[i][0]) and torch.equal(y, ds[i][1])


@pytest.mark.parametrize("shuffle", [False, True])
def test_dataloader_collates_batches(shuffle: bool) -> None:
    ds = make_dataset()
    batches = list(DataLoader(ds, batch_size=4, shuffle=shuffle, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (4,) and y.dtype == torch.int64
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(ds.labels.tolist())
    if not shuffle:
        assert torch.equal(x[2], ds[2][0])


def test_tensor_images_checks_its_input() -> None:
    with pytest.raises(DataError, match="uint8"):
        TensorImages(torch.zeros(2, 1, 4, 4), torch.zeros(2))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        TensorImages(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3))
