"""Counting the non-zero structure: exact numbers on hand-checked models, without building a compact model."""

import sys

import torch
from torch import nn

from ac_toolchain.compact import CompactConv2d, compact
from ac_toolchain.count import count


class Residual(nn.Module):
    """conv-bn-relu, conv-bn, + skip, pool, flatten, linear: 1 -> 8 -> 8 channels on 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        z = self.b2(self.c2(y)) + y
        return self.fc(torch.flatten(nn.functional.max_pool2d(z, 2), 1))


def _unread(*slices: tuple[nn.Module, slice | int]) -> None:
    """Zero the input columns that read a channel: then nothing consumes it."""
    with torch.no_grad():
        for mod, cols in slices:
            mod.weight[:, cols] = 0  # type: ignore[index]


def test_dense_count_is_every_parameter_and_all_macs() -> None:
    m = Residual()
    got = count(m, torch.randn(1, 1, 8, 8))
    assert got["params"] == sum(p.numel() for p in m.parameters())
    assert got["flops"] == 8 * 9 * 64 + 8 * 72 * 64 + 128 * 10


def test_channel_no_consumer_reads_is_removed_through_the_residual_add() -> None:
    m = Residual()
    _unread((m.c2, 3), (m.fc, slice(48, 64)))  # every reader of channel 3 of y, z and z + y
    got = count(m, torch.randn(1, 1, 8, 8))
    # c1: 7 filters x 9; b1: 7 x 2; c2: 7 filters x 7 live channels x 9; b2: 7 x 2; fc: 10 x 7*16 + 10
    assert got["params"] == 63 + 14 + 441 + 14 + 1120 + 10
    assert got["flops"] == 63 * 64 + 441 * 64 + 1120


def test_channel_still_read_through_the_skip_stays_and_zero_columns_go() -> None:
    m = Residual()
    _unread((m.c2, 3))  # fc still reads channel 3 of z + y: the channel stays, c2 loses 9 columns
    got = count(m, torch.randn(1, 1, 8, 8))
    assert got["params"] == 72 + 16 + 8 * 63 + 16 + 1280 + 10
    assert got["flops"] == 72 * 64 + 8 * 63 * 64 + 1280


def test_zero_columns_are_not_counted() -> None:
    conv = nn.Conv2d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight[:, 1, 0, 0] = 0  # one column (c=1, kh=0, kw=0) across all filters
        conv.weight[:, 2] = 0  # a whole input channel: 9 columns
    got = count(nn.Sequential(conv), torch.randn(1, 4, 5, 5))
    assert got["params"] == 6 * (36 - 10)
    assert got["flops"] == 6 * 26 * 9


def test_grouped_and_concat() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 4, 1, bias=False)
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
            self.out = nn.Conv2d(8, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.a(x)
            return self.out(torch.cat([a, self.dw(a)], dim=1))

    net = Net()
    _unread((net.out, 0), (net.out, 4))  # channel 0 of a, read directly and through the depthwise conv
    got = count(net, torch.randn(1, 2, 4, 4))
    # a: 3 filters x 2; dw: 3 channels x 9; out: 2 x 6 inputs (cat: a's 3 + dw's 3)
    assert got["params"] == 6 + 27 + 12
    assert got["flops"] == (6 + 27 + 12) * 16


def test_untraceable_model_falls_back_to_nonzero_elements() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > -1e9 else x  # data-dependent branch: fx cannot trace it

    net = Dynamic()
    with torch.no_grad():
        net.fc.weight[0, :2] = 0
    got = count(net, torch.randn(1, 4))
    assert got == {"params": 15 - 2, "flops": 10}


def test_count_does_not_build_the_compact_model(monkeypatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("count must not compact")

    for module in ("ac_toolchain", "ac_toolchain.compact", "ac_toolchain.compact.compactor"):
        monkeypatch.setattr(sys.modules[module], "compact", refuse)
    m = Residual()
    _unread((m.c2, 3), (m.fc, slice(48, 64)))
    assert count(m, torch.randn(1, 1, 8, 8))["params"] == 63 + 14 + 441 + 14 + 1120 + 10


def test_compact_model_is_counted_as_it_runs() -> None:
    conv = nn.Conv2d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight[:, 2] = 0  # 9 of 36 columns
    masked, x = nn.Sequential(conv), torch.randn(1, 4, 5, 5)
    small = compact(masked, x)
    assert any(isinstance(mod, CompactConv2d) for mod in small.modules())
    assert count(small, x) == count(masked, x) == {"params": 6 * 27, "flops": 6 * 27 * 9}


def test_modules_the_forward_skips_are_not_counted() -> None:
    class Spare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.unused = nn.Linear(4, 3), nn.PReLU(), nn.Linear(7, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x))

    assert count(Spare(), torch.randn(1, 4)) == {"params": 15 + 1, "flops": 12}
