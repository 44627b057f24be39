"""Grouped convs (groups 2 and 4, and group width 1: depthwise), a BatchNorm applied to a block input that also
feeds an add, and re-parameterisable blocks ``relu(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))`` (plain and grouped,
as RepVGG-g2): every scheme compacts to the masked model's outputs, onnxruntime agrees with torch, kept counts are
exact, and ``filter`` at 0.5 removes at least 40 % of the prunable params."""

from pathlib import Path

import pytest
import torch
from torch import nn

from ac_toolchain.compact import compact
from ac_toolchain.count import count
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.prune import SCHEMES, prune
from ac_toolchain.prune.schemes import kept_count, plan_pruning
from tests.nets import cbr, randomise_bn

X = torch.randn(1, 3, 8, 8)


class GroupedNet(nn.Module):
    """stem -> grouped 3x3 -> grouped 3x3 -> 1x1, added to the stem's output -> mean -> linear."""

    def __init__(self, groups: int, width: int = 16) -> None:
        super().__init__()
        self.stem = cbr(3, width)
        self.g1, self.g2 = cbr(width, width, groups=groups), cbr(width, width, groups=groups)
        self.pw = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.fc = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.fc(torch.relu(self.pw(self.g2(self.g1(y))) + y).mean([2, 3]))


class ParallelBN(nn.Module):
    """``bn(conv(x)) + bn(x)``: the identity branch's BatchNorm reads the block input directly."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = cbr(width, width)
        self.bn_conv, self.bn_id = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn_conv(self.conv3(self.conv(x))) + self.bn_id(x))


class RepBlock(nn.Module):
    """``relu(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))``; ``groups`` > 1 groups both convs (RepVGG-g2)."""

    def __init__(self, width: int, groups: int = 1) -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, groups=groups, bias=False), nn.BatchNorm2d(width))
        self.one = nn.Sequential(nn.Conv2d(width, width, 1, groups=groups, bias=False), nn.BatchNorm2d(width))
        self.identity = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(x) + self.one(x)
        out += self.identity(x)
        return torch.relu(out)


class BlockNet(nn.Module):
    def __init__(self, block: str, width: int = 16) -> None:
        super().__init__()
        self.stem = cbr(3, width)
        make = {"parallel-bn": lambda: ParallelBN(width), "rep": lambda: RepBlock(width),
                "rep-g2": lambda: RepBlock(width, groups=2)}[block]  # fmt: skip
        self.blocks = nn.Sequential(make(), make(), make())
        self.fc = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


NETS = {
    "groups2": lambda: GroupedNet(2), "groups4": lambda: GroupedNet(4), "depthwise": lambda: GroupedNet(16),
    "parallel-bn": lambda: BlockNet("parallel-bn"), "rep": lambda: BlockNet("rep"),
    "rep-g2": lambda: BlockNet("rep-g2"),
}  # fmt: skip


def _net(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_bn(NETS[name](), seed)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _prunable(model: nn.Module) -> int:
    """Params of every conv and BN: all but the classifier, whose outputs are the model's."""
    return sum(_params(m) for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", list(NETS))
def test_compact_equals_masked_and_onnxruntime_equals_torch(name: str, scheme: str, tmp_path: Path) -> None:
    net = _net(name)
    prune(net, X, 0.5, scheme)
    small = compact(net, X).eval()
    xs = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert float((small(xs) - net(xs)).abs().max()) <= 1e-5
    assert _params(small) == count(net, X)["params"] == count(small, X)["params"]
    if scheme in ("filter", "channel"):
        assert _params(small) < _params(net)
    assert check_with_onnxruntime(export_onnx(small, X, tmp_path / "m.onnx"), small, xs[:1]) <= 1e-5


@pytest.mark.parametrize("name", list(NETS))
def test_filter_at_half_removes_at_least_40_percent_of_the_prunable_params(name: str) -> None:
    net = _net(name)
    prunable = _prunable(net)
    prune(net, X, 0.5, "filter")
    small = compact(net, X)
    assert _params(net) - _params(small) >= 0.4 * prunable


@pytest.mark.parametrize(("groups", "rate", "kept"), [(2, 0.5, 4), (4, 0.5, 2), (2, 0.25, 6), (4, 0.7, 1)])
def test_grouped_convs_keep_groups_and_an_exact_group_width(groups: int, rate: float, kept: int) -> None:
    """16 channels; group width w = 16 / groups couples channel j of every group (and, through the residual add,
    the stem's filters): w dependency groups, ``kept_count(w, rate)`` of them kept, in every group."""
    width = 16 // groups
    assert kept == kept_count(width, rate)
    net = _net(f"groups{groups}")
    plan = plan_pruning(net, X, rate, "filter")
    assert {e.name: (e.groups_total, e.groups_kept) for e in plan.layers if e.groups_total} == {
        "stem.0": (width, kept), "g1.0": (width, kept), "g2.0": (width, kept), "pw.0": (width, kept),
    }  # fmt: skip
    prune(net, X, rate, "filter")
    small = compact(net, X)
    for name in ("g1.0", "g2.0"):
        conv = small.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        assert (conv.groups, conv.in_channels, conv.out_channels) == (groups, groups * kept, groups * kept)
        assert conv.weight.shape == (groups * kept, kept, 3, 3)


def test_channel_scheme_on_a_grouped_conv_keeps_the_same_channels_in_every_group() -> None:
    net = _net("groups4")
    plan = plan_pruning(net, X, {"g2.0": 0.5}, "channel")
    assert [(e.name, e.groups_total, e.groups_kept) for e in plan.layers] == [("g2.0", 4, 2)]
    prune(net, X, {"g2.0": 0.5}, "channel")
    zero = net.g2[0].weight.detach().abs().sum((0, 2, 3)).eq(0)  # local input columns of g2, per group
    assert int(zero.sum()) == 2
    for g in range(4):  # the same producer filters of g1 are zero in every group
        rows = net.g1[0].weight.detach()[4 * g : 4 * g + 4].abs().sum((1, 2, 3)).eq(0)
        assert torch.equal(rows, zero)
    small = compact(net, X)
    assert (small.g2[0].groups, small.g2[0].in_channels, small.g1[0].out_channels) == (4, 8, 8)


@pytest.mark.parametrize("name", ["parallel-bn", "rep", "rep-g2"])
def test_a_bn_on_the_block_input_loses_the_pruned_channels(name: str) -> None:
    net = _net(name)
    prune(net, X, 0.5, "filter")
    small = compact(net, X)
    ident = [m for n, m in small.named_modules() if n.endswith(("bn_id", "identity"))]
    assert len(ident) == 3 and all(isinstance(m, nn.BatchNorm2d) and m.num_features == 8 for m in ident)
