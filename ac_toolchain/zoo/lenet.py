"""LeNet-5: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc classes (61,706 params on
MNIST). Inputs smaller than 32 px are padded inside conv1 so the classic 16x5x5 flatten comes out at 28x28."""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        pad = max(0, (32 - min(input_size)) // 2)
        w = ((input_size[1] + 2 * pad - 4) // 2 - 4) // 2
        h = ((input_size[0] + 2 * pad - 4) // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ModelError(f"lenet5 needs inputs of at least 12x12, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)  # [N, 6, H, W]
        self.conv2 = nn.Conv2d(6, 16, 5)  # [N, 16, H/2 - 4, W/2 - 4]
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # [N, 16*h*w]
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


@register_model("lenet5")
def lenet5(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size)
