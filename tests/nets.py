"""Random small CNNs for property tests: residual adds, concat, depthwise and grouped convs, SE-style mul,
strided downsampling and flatten -> linear. Every block is a plain module, so torch.fx traces the whole net."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Residual(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.a = cbr(w, w)
        self.b = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w))
        self.out_width = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(self.a(x)) + x)


class Down(nn.Module):
    def __init__(self, w: int, out: int) -> None:
        super().__init__()
        self.body = cbr(w, out, stride=2)
        self.out_width = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Concat(nn.Module):
    def __init__(self, w: int, a: int, b: int) -> None:
        super().__init__()
        self.left, self.right = cbr(w, a, k=1), cbr(w, b, k=3)
        self.out_width = a + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


class Depthwise(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.dw, self.pw = cbr(w, w, groups=w), cbr(w, w, k=1)
        self.out_width = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Grouped(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.body = cbr(w, w, groups=2 if w % 2 == 0 else 1)
        self.out_width = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SqueezeExcite(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(w, max(1, w // 2)), nn.Linear(max(1, w // 2), w)
        self.out_width = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean([2, 3])))))  # [N, C]
        return x * s[:, :, None, None]


BLOCKS = ("residual", "down", "concat", "depthwise", "grouped", "se")


class RandomNet(nn.Module):
    """stem -> blocks -> flatten -> linear -> relu -> linear, on [N, 3, 8, 8]."""

    def __init__(self, kinds: list[str], widths: list[int], stem: int = 6, classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, stem)
        blocks, w, size = [], stem, 8
        for kind, extra in zip(kinds, widths, strict=True):
            block = self._block(kind, w, extra, size)
            size = size // 2 if kind == "down" and size > 2 else size
            if kind == "down" and size * 2 > 8:
                size = 4
            blocks.append(block)
            w = block.out_width
        self.blocks = nn.Sequential(*blocks)
        probe = self.blocks(self.stem(torch.zeros(2, 3, 8, 8)))  # batch 2: BN trains on 1x1 maps
        self.fc1 = nn.Linear(probe[0].numel(), 12)
        self.fc2 = nn.Linear(12, classes)

    @staticmethod
    def _block(kind: str, w: int, extra: int, size: int) -> nn.Module:
        factories = {
            "residual": lambda: Residual(w), "down": lambda: Down(w, extra), "concat": lambda: Concat(w, extra, 3),
            "depthwise": lambda: Depthwise(w), "grouped": lambda: Grouped(w), "se": lambda: SqueezeExcite(w),
        }  # fmt: skip
        return factories[kind]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.blocks(self.stem(x)), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so equivalence checks mean something in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)  # type: ignore[union-attr]
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)  # type: ignore[union-attr]
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def net_specs(max_blocks: int, max_width: int) -> st.SearchStrategy[tuple[list[str], list[int], int]]:
    """(block kinds, widths, seed) for :class:`RandomNet`: hypothesis draws the architecture."""
    return st.builds(
        lambda kinds, widths, seed: (kinds, widths, seed),
        st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=max_blocks),
        st.lists(st.integers(2, max_width), min_size=max_blocks, max_size=max_blocks),
        st.integers(0, 2**16),
    )
