"""``synthetic[:N]``: deterministic, made at the input shape, and learnable."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ac_toolchain.data import load_dataset


def test_default_count_shape_and_classes() -> None:
    splits = load_dataset("synthetic", (3, 16, 12))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 512
    assert splits.source_shape == (3, 16, 12) and splits.num_classes == 10
    x, y = next(iter(DataLoader(splits.train, batch_size=32)))
    assert x.shape == (32, 3, 16, 12) and x.dtype == torch.float32 and y.shape == (32,) and y.dtype == torch.int64


def test_deterministic_for_a_seed() -> None:
    a, b, c = (load_dataset("synthetic:50", (1, 8, 8), seed=s) for s in (3, 3, 4))
    xa, ya = a.train.batch(range(len(a.train)))
    xb, yb = b.train.batch(range(len(b.train)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, c.train.batch(range(len(c.train)))[0])


def test_nearest_class_mean_separates_the_classes() -> None:
    splits = load_dataset("synthetic:500", (1, 16, 16))
    x, y = splits.train.batch(range(len(splits.train)))  # [N, 1, 16, 16], [N]
    means = torch.stack([x[y == k].mean(0).flatten() for k in range(10)])  # [10, 256]
    vx, vy = splits.val.batch(range(len(splits.val)))
    predicted = torch.cdist(vx.flatten(1), means).argmin(1)
    assert (predicted == vy).float().mean() > 0.9


@pytest.mark.slow
def test_a_tiny_cnn_learns_it_in_one_epoch() -> None:
    torch.manual_seed(0)
    splits = load_dataset("synthetic", (1, 16, 16))
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in DataLoader(splits.train, batch_size=16, shuffle=True):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x, y = splits.test.batch(range(len(splits.test)))
    assert (model(x).argmax(1) == y).float().mean() > 0.3  # chance is 0.1
