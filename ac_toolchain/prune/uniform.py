"""The uniform spec (``--search uniform``): the same rate and scheme on every conv and linear layer, one shot.

Structures are ranked by L2 norm (see schemes.py); filters coupled by residual adds are pruned once, at the
rate of the first layer of their group; the classifier loses only input columns (its outputs are the model's).
"""

from __future__ import annotations

import torch
from torch import nn

from ac_toolchain.prune.schemes import LayerPlan, Masks, prune_with_plan


def uniform_prune(
    model: nn.Module, example: torch.Tensor, rate: float, scheme: str = "filter"
) -> tuple[Masks, list[LayerPlan]]:
    """Prune every conv and linear at ``rate`` with ``scheme`` in place; returns the masks and the per-layer plan."""
    masks, plan = prune_with_plan(model, example, rate, scheme)
    return masks, plan.layers
