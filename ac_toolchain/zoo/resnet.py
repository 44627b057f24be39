"""ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3: v1.5) in torchvision's module
layout, so torchvision state dicts load. Two stems: "cifar" (3x3 conv stride 1, no max-pool; kuangliu's
CIFAR layout) and "imagenet" (7x7 conv stride 2 + 3x3 max-pool stride 2). Shortcuts are 1x1 conv + BN when
the shape changes. Reference counts: CIFAR ResNet-18, 10 classes: 11,173,962; ImageNet ResNet-18 / 34 / 50,
1000 classes: 11,689,512 / 21,797,672 / 25,557,032."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ac_toolchain.zoo.registry import check_stem, register_model, scaled


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # [N, planes, H/s, W/s]
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # [N, 4*planes, H/s, W/s]
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _cifar_stem(in_channels: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    return nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.Identity()


def _imagenet_stem(in_channels: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    return nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)


# stem name -> (conv1, maxpool)
STEMS: dict[str, Callable[[int, int], tuple[nn.Conv2d, nn.Module]]] = {
    "cifar": _cifar_stem,
    "imagenet": _imagenet_stem,
}


def _stage(block: Block, cin: int, planes: int, depth: int, stride: int) -> nn.Sequential:
    blocks = [block(cin, planes, stride)]
    blocks += [block(planes * block.expansion, planes, 1) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    def __init__(
        self, block: Block, depths: list[int], num_classes: int, in_channels: int, stem: str, width_mult: float
    ) -> None:
        super().__init__()
        base = scaled(64, width_mult)
        self.conv1, self.maxpool = STEMS[stem](in_channels, base)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        widths = [base * 2**i for i in range(4)]
        cins = [base] + [w * block.expansion for w in widths[:-1]]
        self.layer1 = _stage(block, cins[0], widths[0], depths[0], 1)
        self.layer2 = _stage(block, cins[1], widths[1], depths[1], 2)
        self.layer3 = _stage(block, cins[2], widths[2], depths[2], 2)
        self.layer4 = _stage(block, cins[3], widths[3], depths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, 64, H', W'] (H' = H, or H/4 for imagenet)
        x = self.layer2(self.layer1(x))  # [N, 128 * expansion, H'/2, W'/2]
        x = self.layer4(self.layer3(x))  # [N, 512 * expansion, H'/8, W'/8]
        x = torch.flatten(self.avgpool(x), 1)  # [N, 512 * expansion]
        return self.fc(x)  # [N, num_classes]


def _resnet(block: Block, depths: list[int]) -> Callable[..., nn.Module]:
    def build(
        num_classes: int, in_channels: int, input_size: tuple[int, int], stem: str = "auto", width_mult: float = 1.0
    ) -> nn.Module:
        return ResNet(block, depths, num_classes, in_channels, check_stem(stem, input_size), width_mult)

    return build


register_model("resnet18")(_resnet(BasicBlock, [2, 2, 2, 2]))
register_model("resnet34")(_resnet(BasicBlock, [3, 4, 6, 3]))
register_model("resnet50")(_resnet(Bottleneck, [3, 4, 6, 3]))
