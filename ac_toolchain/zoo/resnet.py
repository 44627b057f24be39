"""ResNet-18/34/50 in torchvision's layout, with a CIFAR stem (3x3 conv, stride 1, no max-pool) or the
ImageNet stem (7x7 conv stride 2 + 3x3 max-pool). Reference counts: CIFAR ResNet-18 with 10 classes
11,173,962; ImageNet ResNet-18 / 34 / 50 with 1000 classes 11,689,512 / 21,797,672 / 25,557,032."""

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
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(
        self, block: type[BasicBlock | Bottleneck], depths: list[int], num_classes: int, in_channels: int,
        stem: str, width_mult: float,
    ) -> None:  # fmt: skip
        super().__init__()
        base = scaled(64, width_mult)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        cin, stages = base, []
        for i, depth in enumerate(depths):
            planes = base * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, 64, H', W']
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [N, 512 * expansion, H'/8, W'/8]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(block: type[BasicBlock | Bottleneck], depths: list[int]) -> Callable[..., nn.Module]:
    def build(
        num_classes: int, in_channels: int, input_size: tuple[int, int], stem: str = "auto", width_mult: float = 1.0
    ) -> nn.Module:
        return ResNet(block, depths, num_classes, in_channels, check_stem(stem, input_size), width_mult)

    return build


register_model("resnet18")(_resnet(BasicBlock, [2, 2, 2, 2]))
register_model("resnet34")(_resnet(BasicBlock, [3, 4, 6, 3]))
register_model("resnet50")(_resnet(Bottleneck, [3, 4, 6, 3]))
