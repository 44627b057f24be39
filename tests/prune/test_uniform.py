"""Uniform L1 filter pruning: exact kept counts, lowest-L1 filters removed, BN coupled, masks hold."""

import pytest
import torch
from torch import nn

from ac_toolchain.prune.uniform import kept_count, uniform_filter_prune
from ac_toolchain.train import apply_masks


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 10, 3, bias=True), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Conv2d(10, 7, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(7 * 4 * 4, 5),
    )  # fmt: skip


@pytest.mark.parametrize(("total", "rate", "kept"), [(10, 0.5, 5), (7, 0.5, 4), (10, 0.95, 1), (64, 0.9, 6), (3, 0.0, 3)])
def test_kept_count_rounds_and_keeps_one(total: int, rate: float, kept: int) -> None:
    assert kept_count(total, rate) == kept


def test_prunes_exactly_the_lowest_l1_filters_of_every_conv() -> None:
    net = _net()
    norms = net[0].weight.detach().abs().flatten(1).sum(1)
    masks, log = uniform_filter_prune(net, 0.5)
    assert [(x.name, x.kept, x.total) for x in log] == [("0", 5, 10), ("3", 4, 7)]
    alive = net[0].weight.detach().flatten(1).ne(0).any(1)
    assert set(alive.nonzero().flatten().tolist()) == set(norms.topk(5).indices.tolist())
    assert int(net[3].weight.detach().flatten(1).ne(0).any(1).sum()) == 4
    assert "6.weight" not in masks  # the classifier is left alone


def test_pruned_channels_are_exactly_zero_after_bn() -> None:
    net = _net().eval()
    uniform_filter_prune(net, 0.5)
    dead = net[0].weight.detach().flatten(1).eq(0).all(1)
    out = net[:2](torch.randn(4, 3, 8, 8))  # conv + BN: [4, 10, 6, 6]
    assert out[:, dead].abs().max() == 0
    assert net[0].bias[dead].abs().max() == 0


def test_masks_keep_pruned_weights_zero_through_sgd() -> None:
    net = _net()
    masks, _ = uniform_filter_prune(net, 0.7)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        loss = net(torch.randn(8, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        apply_masks(net, masks)
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        assert params[name][mask == 0].abs().max() == 0, name
