"""Params and FLOPs of a model's non-zero structure.

FLOPs here are multiply-accumulates (MACs) of Conv2d and Linear layers, the convention of the pruning
literature (dense CIFAR ResNet-18: ~556 M). Params are the parameters that a physically compacted model keeps:

* a filter (output row) is dead when its weights and bias are all zero;
* an input channel is dead when the tensor feeding it is structurally zero in that channel;
* a column ``(c, kh, kw)`` is dead when it is zero in every live filter, or its channel is dead.

Structural zeros are propagated through the torch.fx graph: conv/linear rows, BatchNorm with gamma = beta = 0,
ops with f(0) = 0 (ReLU, pooling, dropout), residual add (zero only if every operand is), mul (zero if any
operand is), concat along channels, and flatten (each channel becomes H*W features). Any other op is treated
as producing live channels (conservative: it can only over-count). A model torch.fx cannot trace is counted
by non-zero elements, with MACs from forward hooks.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

Zero = torch.Tensor | None  # [C] bool, True where the channel is structurally zero; None = all live
PRESERVING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Hardswish, nn.SiLU, nn.GELU, nn.Tanh,
)  # fmt: skip
PRESERVING_FUNCTIONS: set[Any] = {
    torch.relu, nn.functional.relu, nn.functional.relu6, nn.functional.max_pool2d, nn.functional.avg_pool2d,
    nn.functional.adaptive_avg_pool2d, nn.functional.dropout, torch.nn.functional.hardswish, torch.tanh,
    nn.functional.silu, nn.functional.gelu,
}  # fmt: skip
PRESERVING_METHODS = {"relu", "relu_", "contiguous", "clone", "mean", "tanh"}


class _Counter:
    """Walks a traced graph once, tracking structural zeros and accumulating params / MACs."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.zero: dict[fx.Node, Zero] = {}
        self.params = 0
        self.flops = 0
        self.counted: set[str] = set()

    def run(self) -> dict[str, int]:
        for node in self.gm.graph.nodes:
            self.zero[node] = self.visit(node)
        for name, mod in self.modules.items():  # parameters of modules no rule understood: count non-zeros
            if name not in self.counted and not any(True for _ in mod.children()):
                self.params += sum(int(p.count_nonzero()) for p in mod.parameters(recurse=False))
        return {"params": self.params, "flops": self.flops}

    def arg_zero(self, arg: Any) -> Zero:
        return self.zero.get(arg) if isinstance(arg, fx.Node) else None

    def visit(self, node: fx.Node) -> Zero:
        if node.op == "call_module":
            mod = self.modules[str(node.target)]
            rule = MODULE_RULES.get(type(mod))
            if rule is not None:
                self.counted.add(str(node.target))
                return rule(self, node, mod)
            return self.arg_zero(node.args[0]) if isinstance(mod, PRESERVING_MODULES) and node.args else None
        if node.op == "call_function":
            if node.target in FUNCTION_RULES:
                return FUNCTION_RULES[node.target](self, node)
            return self.arg_zero(node.args[0]) if node.target in PRESERVING_FUNCTIONS and node.args else None
        if node.op == "call_method" and node.target in PRESERVING_METHODS:
            return self.arg_zero(node.args[0])
        if node.op == "call_method" and node.target in ("view", "reshape", "flatten"):
            return _flatten(self, node)
        return None


def _rows_and_columns(w: torch.Tensor, groups: int, live_in: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Live filters [F] and the number of kept weights of a (grouped) weight [F, C/g, ...]."""
    f_total = w.shape[0]
    w2 = w.detach().reshape(f_total, w.shape[1], -1)  # [F, C/g, KH*KW]
    live_rows = w2.flatten(1).ne(0).any(dim=1)  # [F]
    kept = 0
    per_group = f_total // groups
    for g in range(groups):
        rows = live_rows[g * per_group : (g + 1) * per_group]
        block = w2[g * per_group : (g + 1) * per_group][rows]  # [F'_g, C/g, KH*KW]
        chans = live_in[g * w.shape[1] : (g + 1) * w.shape[1]]  # [C/g]
        cols = block.ne(0).any(dim=0) & chans[:, None]  # [C/g, KH*KW]
        kept += int(rows.sum()) * int(cols.sum())
    return live_rows, kept


def _weighted_layer(c: _Counter, node: fx.Node, mod: nn.Conv2d | nn.Linear, groups: int) -> Zero:
    in_zero = c.arg_zero(node.args[0])
    n_in = mod.weight.shape[1] * groups
    live_in = ~in_zero if in_zero is not None and len(in_zero) == n_in else torch.ones(n_in, dtype=torch.bool)
    live_rows, kept = _rows_and_columns(mod.weight, groups, live_in)
    if mod.bias is not None:
        live_rows = live_rows | mod.bias.detach().ne(0)
        c.params += int(live_rows.sum())
    c.params += kept
    out_shape = node.meta["tensor_meta"].shape  # [N, F, H, W] or [N, F]
    c.flops += kept * (out_shape[2] * out_shape[3] if len(out_shape) == 4 else 1)
    return ~live_rows


def _conv(c: _Counter, node: fx.Node, mod: nn.Module) -> Zero:
    assert isinstance(mod, nn.Conv2d)
    return _weighted_layer(c, node, mod, mod.groups)


def _linear(c: _Counter, node: fx.Node, mod: nn.Module) -> Zero:
    assert isinstance(mod, nn.Linear)
    return _weighted_layer(c, node, mod, 1)


def _batchnorm(c: _Counter, node: fx.Node, mod: nn.Module) -> Zero:
    assert isinstance(mod, nn.BatchNorm2d)
    if mod.weight is None or mod.bias is None:
        return None  # no affine: (0 - mean) / std is not zero
    dead = mod.weight.detach().eq(0) & mod.bias.detach().eq(0)
    c.params += 2 * int((~dead).sum())
    return dead


def _add(c: _Counter, node: fx.Node) -> Zero:
    zs = [c.arg_zero(a) for a in node.args]
    if any(z is None for z in zs) or len({len(z) for z in zs if z is not None}) != 1:
        return None
    return torch.stack([z for z in zs if z is not None]).all(dim=0)


def _mul(c: _Counter, node: fx.Node) -> Zero:
    zs = [z for z in (c.arg_zero(a) for a in node.args) if z is not None]
    if not zs or len({len(z) for z in zs}) != 1:
        return None
    return torch.stack(zs).any(dim=0)


def _cat(c: _Counter, node: fx.Node) -> Zero:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    parts = node.args[0]
    if dim != 1 or not isinstance(parts, list | tuple):
        return None
    zs = []
    for p in parts:
        z = c.arg_zero(p)
        width = p.meta["tensor_meta"].shape[1] if isinstance(p, fx.Node) else 0
        zs.append(z if z is not None else torch.zeros(width, dtype=torch.bool))
    return torch.cat(zs)


def _flatten(c: _Counter, node: fx.Node) -> Zero:
    """[N, C, H, W] -> [N, C*H*W]: each channel's flag repeats H*W times (row-major flatten)."""
    src = node.args[0]
    z = c.arg_zero(src)
    if z is None or not isinstance(src, fx.Node):
        return None
    in_shape, out_shape = src.meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
    if len(out_shape) != 2 or len(in_shape) < 2 or out_shape[0] != in_shape[0]:
        return None
    return z.repeat_interleave(int(torch.tensor(in_shape[2:]).prod()) if len(in_shape) > 2 else 1)


MODULE_RULES: dict[type, Callable[[_Counter, fx.Node, nn.Module], Zero]] = {
    nn.Conv2d: _conv, nn.Linear: _linear, nn.BatchNorm2d: _batchnorm,
}  # fmt: skip
FUNCTION_RULES: dict[Any, Callable[[_Counter, fx.Node], Zero]] = {
    operator.add: _add, torch.add: _add, operator.iadd: _add, operator.mul: _mul, torch.mul: _mul,
    torch.cat: _cat, torch.flatten: _flatten,
}  # fmt: skip


def _count_untraced(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Fallback: non-zero parameter elements; MACs = non-zero weights x output positions."""
    macs = [0]

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
        macs[0] += int(mod.weight.count_nonzero()) * spatial  # type: ignore[operator]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return {"params": sum(int(p.count_nonzero()) for p in model.parameters()), "flops": macs[0]}


def count(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """``{"params", "flops"}`` of the non-zero structure for one example input (batch 1)."""
    was_training = model.training
    model.eval()
    try:
        try:
            gm = fx.symbolic_trace(model)
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        except Exception:  # fx cannot trace every user model: fall back to element counts
            return _count_untraced(model, example)
        return _Counter(gm).run()
    finally:
        model.train(was_training)
