"""VGG-16 with BatchNorm for CIFAR-sized inputs.

Variant: 13 x (conv3x3 pad 1 with bias - BN - ReLU) in the cfg below, 5 max-pools, adaptive average pool to
1x1 (so any input of at least 32x32 works), then Linear(512, 512) - ReLU - Linear(512, classes). This is the
kuangliu/pytorch-cifar VGG-16 with a 512-wide hidden layer: 14,990,922 params with 3 channels and 10 classes,
which is the "14.99 M" usually quoted for NNI's CIFAR VGG-16. (NNI's own model has bias-free convs and a
BatchNorm1d in the classifier, 14,987,722 params, also 14.99 M; we keep the plain classifier so every layer
is a prunable Conv2d or Linear.) Without the hidden layer (kuangliu's Linear(512, classes)) it is 14,728,266.
"""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo.registry import register_model, scaled

CFG16: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
MIN_SIZE = 32  # five 2x2 pools: 32 -> 1


def make_features(cfg: list[int | str], in_channels: int, width_mult: float) -> tuple[nn.Sequential, int]:
    """The conv stack of ``cfg`` ("M" = 2x2 max-pool) and its output channels."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = scaled(int(v), width_mult)
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*layers), c


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_channels: int, width_mult: float) -> None:
        super().__init__()
        self.features, c = make_features(cfg, in_channels, width_mult)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = scaled(512, width_mult)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # [N, 512, 1, 1]
        return self.classifier(torch.flatten(x, 1))  # [N, num_classes]


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int, input_size: tuple[int, int], width_mult: float = 1.0) -> nn.Module:
    if min(input_size) < MIN_SIZE:
        raise ModelError(
            f"vgg16 has five 2x2 max-pools and needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, got {input_size}; "
            "resize or pad the data (e.g. MNIST 28 -> 32)"
        )
    return VGG(CFG16, num_classes, in_channels, width_mult)
