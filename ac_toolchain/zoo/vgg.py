"""VGG-16 with BatchNorm, CIFAR layout: 13 conv3x3-BN-ReLU, 5 max-pools, global average pool, then
Linear(512, 512) - ReLU - Linear(512, classes). With 10 classes: 14,990,922 params (NNI's "14.99 M")."""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo.registry import register_model, scaled

CFG16: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_channels: int, width_mult: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled(int(v), width_mult)
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = scaled(512, width_mult)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # [N, 512, 1, 1]
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int, input_size: tuple[int, int], width_mult: float = 1.0) -> nn.Module:
    if min(input_size) < 32:
        raise ModelError(f"vgg16 has five 2x2 pools and needs inputs of at least 32x32, got {input_size}")
    return VGG(CFG16, num_classes, in_channels, width_mult)
