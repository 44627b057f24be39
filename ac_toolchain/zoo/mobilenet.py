"""MobileNetV2 in torchvision's module layout (inverted residuals, depthwise 3x3, ReLU6, 1280 last channels,
dropout 0.2 + linear), so torchvision state dicts load: 3,504,872 params at 1000 classes. The "cifar" stem
uses stride 1 in the first conv and in the first stride-2 stage (24 channels), so a 32x32 input ends at 4x4
rather than 1x1; "imagenet" keeps the standard strides (224 -> 7)."""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.zoo.registry import check_stem, register_model, scaled

# expansion t, output channels c, repeats n, first stride s (torchvision's inverted_residual_setting)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
STEM_STRIDES = {"imagenet": (2, 2), "cifar": (1, 1)}  # stem -> (first conv stride, stride of the 24-channel stage)
DIVISOR = 8


def conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, k=1)] if expand != 1 else []  # expand
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)  # [N, cout, H/stride, W/stride]


def make_features(in_channels: int, stem: str, width_mult: float) -> tuple[nn.Sequential, int]:
    """features[0] stem conv, features[1..17] inverted residuals, features[18] 1x1 conv; and its width."""
    stem_stride, stage1_stride = STEM_STRIDES[stem]
    cin = scaled(32, width_mult, DIVISOR)
    layers: list[nn.Module] = [conv_bn_relu6(in_channels, cin, stride=stem_stride)]
    for i, (t, c, n, s) in enumerate(SETTINGS):
        cout = scaled(c, width_mult, DIVISOR)
        first_stride = stage1_stride if i == 1 else s
        for j in range(n):
            layers.append(InvertedResidual(cin, cout, first_stride if j == 0 else 1, t))
            cin = cout
    last = scaled(1280, max(1.0, width_mult), DIVISOR)  # torchvision never narrows the last conv
    layers.append(conv_bn_relu6(cin, last, k=1))
    return nn.Sequential(*layers), last


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stem: str, width_mult: float) -> None:
        super().__init__()
        self.features, last = make_features(in_channels, stem, width_mult)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # [N, 1280, 1, 1]
        return self.classifier(torch.flatten(x, 1))  # [N, num_classes]


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int, in_channels: int, input_size: tuple[int, int], stem: str = "auto", width_mult: float = 1.0
) -> nn.Module:
    return MobileNetV2(num_classes, in_channels, check_stem(stem, input_size), width_mult)
