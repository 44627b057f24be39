"""Adapting images to the model, normalisation from train, batched fetch, registry errors."""

import pytest
import torch
from torch.utils.data import DataLoader

from ac_toolchain.data import dataset_names, load_dataset
from ac_toolchain.data.transforms import adapt
from ac_toolchain.errors import DataError


def test_pad_28_to_32_is_centred() -> None:
    x = torch.full((1, 1, 28, 28), 255, dtype=torch.uint8)
    out = adapt(x, (1, 32, 32))
    assert out.shape == (1, 1, 32, 32)
    assert out[0, 0, 2:30, 2:30].min() == 1.0 and out[0, 0, :2].max() == 0 and out[0, 0, :, 30:].max() == 0


def test_channels_one_to_three_and_three_to_one() -> None:
    grey = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    rgb = adapt(grey, (3, 8, 8))
    assert torch.equal(rgb[:, 0], rgb[:, 2]) and torch.allclose(rgb[:, 1], grey[:, 0].float() / 255)
    colour = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    colour[:, 1] = 255  # pure green
    assert torch.allclose(adapt(colour, (1, 4, 4)), torch.full((1, 1, 4, 4), 0.587))


@pytest.mark.parametrize("size", [(16, 16), (48, 24)])  # any side too big: resize (else pad)
def test_resize_up_and_down(size: tuple[int, int]) -> None:
    x = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    out = adapt(x, (3, *size))
    assert out.shape == (1, 3, *size) and torch.allclose(out, torch.full_like(out, 128 / 255), atol=1e-5)


def test_normalisation_comes_from_train() -> None:
    splits = load_dataset("mnist-mini", (1, 28, 28))
    x, _ = next(iter(DataLoader(splits.train, batch_size=2048)))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert splits.test.normalise is splits.train.normalise  # type: ignore[attr-defined]


def test_dataloader_batches_match_single_items() -> None:
    splits = load_dataset("synthetic:40", (3, 8, 8))
    x, y = next(iter(DataLoader(splits.train, batch_size=8)))
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (8,) and y.dtype == torch.int64
    assert torch.allclose(x[3], splits.train[3][0]) and int(y[3]) == int(splits.train[3][1])


def test_synthetic_is_deterministic() -> None:
    a, b = (load_dataset("synthetic:50", (1, 8, 8), seed=3) for _ in range(2))
    assert torch.equal(a.train[0][0], b.train[0][0])


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("imagenet", {}, "unknown dataset 'imagenet'"),
        ("mnist", {}, "mnist needs a folder: --data mnist:PATH"),
        ("mnist:/no/such/folder", {}, "folder /no/such/folder not found"),
        ("synthetic:abc", {}, "image count"),
        ("mnist-mini", {"val_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
        ("mnist-mini", {"val_fraction": -0.1}, "must be in [0, 1)"),
    ],
)
def test_bad_specs(spec: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(spec, (1, 28, 28), **kwargs)
    assert needle in str(err.value)


def test_names() -> None:
    assert dataset_names() == ["cifar10", "imagefolder", "mnist", "mnist-mini", "synthetic"]
