"""The uniform baseline (``--search uniform``): the same rate and scheme on every conv, one shot.

Structures are ranked by L2 norm (see schemes.py); filters coupled by residual adds are pruned once, at the
rate of the first conv of their group.
"""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.prune.schemes import LayerPlan, Masks, prune_with_plan


def conv_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def uniform_prune(
    model: nn.Module, example: torch.Tensor, rate: float, scheme: str = "filter"
) -> tuple[Masks, list[LayerPlan]]:
    """Prune every conv at ``rate`` with ``scheme`` in place; returns the masks and the per-layer plan."""
    convs = conv_layers(model)
    masks, plan = prune_with_plan(model, example, dict.fromkeys(convs, rate), dict.fromkeys(convs, scheme))
    return masks, plan.layers
