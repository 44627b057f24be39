"""LeNet-5: conv 6@5x5 - ReLU - pool - conv 16@5x5 - ReLU - pool - fc 120 - fc 84 - fc classes.

Inputs whose shorter side is below 32 px get padding 2 in conv1, as in the classic MNIST setup, so a 28x28
input follows the 32x32 path (16x5x5 flatten, 61,706 params with 1 channel and 10 classes). The flatten
size is computed from the input size, so any input of at least 12x12 works.
"""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo.registry import register_model

CLASSIC_SIZE = 32
MIN_SIZE = 12  # with padding 2: 12 -> conv 12 -> pool 6 -> conv 2 -> pool 1


def _conv1_padding(input_size: tuple[int, int]) -> int:
    return 2 if min(input_size) < CLASSIC_SIZE else 0


def _flatten_hw(input_size: tuple[int, int], pad: int) -> tuple[int, int]:
    """Spatial size after conv1 (5x5, pad) - pool 2 - conv2 (5x5) - pool 2."""
    h, w = (((s + 2 * pad - 4) // 2 - 4) // 2 for s in input_size)
    return h, w


class LeNet5(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        pad = _conv1_padding(input_size)
        h, w = _flatten_hw(input_size, pad)
        if h < 1 or w < 1:
            raise ModelError(f"lenet5 needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # [N, 6, (H+2p-4)/2, (W+2p-4)/2]
        x = self.pool2(self.relu2(self.conv2(x)))  # [N, 16, h, w]
        x = torch.flatten(x, 1)  # [N, 16*h*w]
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))  # [N, 84]
        return self.fc3(x)  # [N, num_classes]


@register_model("lenet5")
def lenet5(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size)
