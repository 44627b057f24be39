"""Params and FLOPs of a model's non-zero structure.

The structure counted is what :func:`ac_toolchain.compact.compact` keeps: dependency groups that no consumer
reads are gone (with their filters, BN entries and depthwise filters), and all-zero GEMM columns are gone.
So ``count(masked) == count(compact(masked))`` holds by definition, and the tests check it against
independent figures: hand-computed models and the element count of the exported ONNX initialisers.

FLOPs are multiply-accumulates (MACs) of convolutions and linear layers, the convention of the pruning
literature (dense CIFAR ResNet-18: 556 M). Params are every parameter element of the modules the forward uses.
A model torch.fx cannot trace is counted by its non-zero parameter elements, with MACs of its non-zero weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ac_toolchain.compact.modules import CompactConv2d, GatherLinear
from ac_toolchain.errors import ModelError


def _macs(mod: nn.Module, out: torch.Tensor, nonzero_only: bool) -> int:
    """MACs of one call: weight elements (kept GEMM entries) x output positions per sample."""
    weight: torch.Tensor = mod.weight  # type: ignore[assignment]
    per_position = int(weight.count_nonzero()) if nonzero_only else weight.numel()
    spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
    return per_position * spatial


def _physical(model: nn.Module, example: torch.Tensor, nonzero_only: bool) -> dict[str, int]:
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
    from ac_toolchain.compact import compact  # compact imports the graph, which imports nothing of ours

    was_training = model.training
    model.eval()
    try:
        try:
            small = compact(model, example).eval()
        except ModelError:  # torch.fx cannot trace it: element counts
            return _physical(model, example, nonzero_only=True)
        return _physical(small, example, nonzero_only=False)
    finally:
        model.train(was_training)
