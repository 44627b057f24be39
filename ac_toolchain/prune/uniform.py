"""Uniform L1 filter pruning: the same rate on every conv, one shot — the ``--search uniform`` baseline.

Each conv keeps exactly ``max(1, round((1 - rate) * F))`` of its F filters, those of largest L1 norm.
A pruned filter is zeroed together with its bias and with the gamma/beta of the BatchNorm that directly
consumes the conv (found with torch.fx), so the channel is exactly zero downstream. The returned masks keep
it so during fine-tuning. A model torch.fx cannot trace is still pruned, without the BN coupling: its
pruned channels then carry BN's beta and count as alive (conservative, never wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from ac_toolchain.train import Masks


@dataclass(frozen=True)
class LayerPrune:
    name: str
    scheme: str
    rate: float
    kept: int
    total: int


def kept_count(total: int, rate: float) -> int:
    """Structures kept at ``rate``: round half to even of (1 - rate) * total, at least one."""
    return max(1, round((1.0 - rate) * total))


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """``{conv_name: bn_name}`` for each conv whose only consumer is a BatchNorm2d; {} if untraceable."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d) and len(node.users) == 1:
            (user,) = node.users
            if user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d):
                pairs[str(node.target)] = str(user.target)
    return pairs


def _filter_mask(weight: torch.Tensor, rate: float) -> torch.Tensor:
    """[F] 0/1 mask keeping the filters of largest L1 norm (ties broken by index)."""
    scores = weight.detach().abs().flatten(1).sum(dim=1)  # [F]
    keep = torch.topk(scores, kept_count(len(scores), rate), sorted=False).indices
    mask = torch.zeros_like(scores)
    mask[keep] = 1.0
    return mask


def uniform_filter_prune(model: nn.Module, rate: float) -> tuple[Masks, list[LayerPrune]]:
    """Zero the lowest-L1 filters of every Conv2d in place; returns parameter masks and a per-layer log."""
    bn_of = conv_bn_pairs(model)
    modules = dict(model.named_modules())
    masks: Masks = {}
    log = []
    for name, conv in modules.items():
        if not isinstance(conv, nn.Conv2d):
            continue
        rows = _filter_mask(conv.weight, rate)  # [F]
        masks[f"{name}.weight"] = rows.view(-1, 1, 1, 1).expand_as(conv.weight).clone()
        if conv.bias is not None:
            masks[f"{name}.bias"] = rows.clone()
        if name in bn_of:
            masks[f"{bn_of[name]}.weight"] = rows.clone()
            masks[f"{bn_of[name]}.bias"] = rows.clone()
        log.append(LayerPrune(name, "filter", rate, int(rows.sum()), len(rows)))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for pname, mask in masks.items():
            params[pname].mul_(mask)
    return masks, log
