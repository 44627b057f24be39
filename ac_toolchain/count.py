"""Params and FLOPs of a model's non-zero structure.

The structure counted is what pruning leaves once its zeros are taken away: dependency groups that no
consumer reads are gone (with their filters, BN entries and depthwise filters), and all-zero GEMM columns are
gone. :func:`count` traces the dependency graph, reads the zero pattern of the weights as masks and hands
them to the project's one analytic cost, :func:`ac_toolchain.cost.analytic.masks_cost`; it never builds the
compact model. The tests hold it against the compact model's own parameters and hook-counted MACs, and
against hand-computed models.

FLOPs are multiply-accumulates (MACs) of convolutions and linear layers, the convention of the pruning
literature (dense CIFAR ResNet-18: 556 M). Params are every parameter element of the modules the forward uses.
A model that already holds compact layers (``CompactConv2d``, ``GatherLinear``: the graph does not model
them) is counted as it runs: every parameter element, MACs of every weight. A model torch.fx cannot trace is
counted by its non-zero parameter elements, with MACs of its non-zero weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ac_toolchain.compact.modules import CompactConv2d, GatherLinear
from ac_toolchain.cost.analytic import called_modules, masks_cost
from ac_toolchain.errors import ModelError
from ac_toolchain.graph import trace


def _macs(mod: nn.Module, out: torch.Tensor, nonzero_only: bool) -> int:
    """MACs of one call: weight elements (kept GEMM entries) x output positions per sample."""
    weight: torch.Tensor = mod.weight  # type: ignore[assignment]
    per_position = int(weight.count_nonzero()) if nonzero_only else weight.numel()
    spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
    return per_position * spatial


def _physical(model: nn.Module, example: torch.Tensor, nonzero_only: bool) -> dict[str, int]:
    """Elements and MACs of the model as it runs (hooks on its leaf modules)."""
    macs = [0]
    used: set[nn.Module] = set()

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        used.add(mod)
        if isinstance(mod, nn.Conv2d | nn.Linear | CompactConv2d | GatherLinear):
            macs[0] += _macs(mod, out, nonzero_only)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    params = [p for m in used for p in m.parameters(recurse=False)]
    n = sum(int(p.count_nonzero()) if nonzero_only else p.numel() for p in params)
    return {"params": n, "flops": macs[0]}


def count(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """``{"params", "flops"}`` of the non-zero structure for one example input (batch 1)."""
    was_training = model.training
    model.eval()
    try:
        if any(isinstance(m, CompactConv2d | GatherLinear) for m in model.modules()):
            return _physical(model, example, nonzero_only=False)
        try:
            graph = trace(model, example)
        except ModelError:  # torch.fx cannot trace it: element counts
            return _physical(model, example, nonzero_only=True)
        masks = {name: p.detach().ne(0).float() for name, p in model.named_parameters()}  # the zero pattern
        cost = masks_cost(graph, masks, called_modules(model, example))
        return {"params": cost.params, "flops": cost.flops}
    finally:
        model.train(was_training)
