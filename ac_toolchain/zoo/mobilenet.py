"""MobileNetV2 in torchvision's layout (inverted residuals, depthwise 3x3, ReLU6, 1280 last channels,
dropout 0.2 + linear): 3,504,872 params at 1000 classes. The CIFAR stem uses stride 1 in the first conv and
in the first stride-2 stage, so a 32x32 input ends at 4x4 rather than 1x1."""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.zoo.registry import check_stem, register_model, scaled

# expansion t, output channels c, repeats n, first stride s
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, k=1)] if expand != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stem: str, width_mult: float) -> None:
        super().__init__()
        cifar = stem == "cifar"
        cin = scaled(32, width_mult, 8)
        last = scaled(1280, max(1.0, width_mult), 8)
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, cin, stride=1 if cifar else 2)]
        for i, (t, c, n, s) in enumerate(SETTINGS):
            cout = scaled(c, width_mult, 8)
            for j in range(n):
                stride = (1 if cifar and i == 1 else s) if j == 0 else 1
                layers.append(InvertedResidual(cin, cout, stride, t))
                cin = cout
        layers.append(conv_bn_relu6(cin, last, k=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # [N, 1280, 1, 1]
        return self.classifier(torch.flatten(x, 1))


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int, in_channels: int, input_size: tuple[int, int], stem: str = "auto", width_mult: float = 1.0
) -> nn.Module:
    return MobileNetV2(num_classes, in_channels, check_stem(stem, input_size), width_mult)
