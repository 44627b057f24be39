"""ResNeXt-29 for CIFAR (Xie et al. 2017, "Aggregated Residual Transformations"): three stages of three
bottleneck blocks whose 3x3 conv is grouped (``cardinality`` groups of ``base_width * 2**stage`` channels each),
outputs 256 / 512 / 1024 channels times the width multiplier. Defaults are the paper's 8x64d (34.4 M params at
10 classes); the ``imagenet`` stem is ResNet's 7x7 stride-2 conv and max-pool."""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.zoo.registry import check_stem, register_model, scaled
from ac_toolchain.zoo.resnet import STEMS, _downsample


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, cardinality: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # [N, cout, H/s, W/s]
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # grouped 3x3
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNeXt(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int, stem: str, width_mult: float, cardinality: int, base_width: int,
        depth: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        cin = scaled(64, width_mult)
        self.conv1, self.maxpool = STEMS[stem](in_channels, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        stages = []
        for i in range(3):
            width = cardinality * scaled(base_width * 2**i, width_mult)
            cout = scaled(256 * 2**i, width_mult)
            blocks = [ResNeXtBlock(cin if j == 0 else cout, width, cout, cardinality, 2 if j == 0 and i else 1)
                      for j in range(depth)]  # fmt: skip
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [N, 64, H', W']
        x = self.layer3(self.layer2(self.layer1(x)))  # [N, 1024, H'/4, W'/4]
        return self.fc(torch.flatten(self.avgpool(x), 1))  # [N, num_classes]


@register_model("resnext29")
def resnext29(
    num_classes: int, in_channels: int, input_size: tuple[int, int], stem: str = "auto", width_mult: float = 1.0,
    cardinality: int = 8, base_width: int = 64,
) -> nn.Module:  # fmt: skip
    return ResNeXt(num_classes, in_channels, check_stem(stem, input_size), width_mult, cardinality, base_width)
