"""Dependency graph: which channels of which layers must be removed together.

Built from a ``torch.fx`` symbolic trace. fx keeps one node per module call, named exactly as in
``model.named_modules()``, so per-layer rates and schemes address layers by the names users see; torch.export
would first decompose every module into aten ops and functionalise the graph, and the mapping back to modules
would have to be rebuilt from metadata.

Every channel of every tensor is an element of a union-find. A conv or linear creates one new element per
output channel (its filters); ops that keep channels aligned (BatchNorm, activations, pooling, dropout,
depthwise convs) pass elements through; a residual add or an elementwise mul unites the operands' elements
position by position; a concat along channels joins the lists; a flatten repeats each channel's element H*W
times, so a linear's input features map back to channels. A union-find class is one removable channel: its
*positions* are every weight slice that disappears with it (producer filter rows, BN entries, consumer input
columns, linear input features).

A grouped conv (``1 < groups``, not depthwise) unites channel j of every group, on its input and on its
filters, so pruning removes the same channels from every group and keeps ``groups``; its ``layer_in`` lists
the group ids of one group's input channels (its weight's columns).

Elements that reach the model's input or output, or an op the graph does not understand are *frozen*: their
channels are kept whole. Unknown ops are therefore handled conservatively —
never mis-pruned — and listed in ``Graph.frozen_reasons``; each frozen group's ``reason`` says why in a few
words (the coverage report, ``ac prune --explain``, shows it per layer).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp

from ac_toolchain.errors import ModelError

Chans = list[int] | None  # element id per channel of a node's output (dim 1), None for non-tensors / unknown

PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid,
    nn.Tanh,
)  # fmt: skip
SAME_SHAPE_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.Hardswish,
    nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
)  # fmt: skip
PASS_FUNCTIONS: set[Any] = {
    torch.relu, torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.relu6, nn.functional.silu,
    nn.functional.gelu, nn.functional.hardswish, nn.functional.hardsigmoid, nn.functional.sigmoid,
    nn.functional.max_pool2d, nn.functional.avg_pool2d, nn.functional.adaptive_avg_pool2d,
    nn.functional.adaptive_max_pool2d, nn.functional.dropout, operator.neg,
}  # fmt: skip
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
JOIN_FUNCTIONS: set[Any] = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                            torch.add, torch.mul, torch.sub}  # fmt: skip
JOIN_METHODS = {"add", "add_", "mul", "mul_", "sub"}


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside (a context manager and a decorator). Pruning's bookkeeping is
    many small tensor ops; on a loaded machine their thread synchronisation costs far more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def weight_of(mod: nn.Module) -> torch.Tensor:
    """The ``weight`` of a conv / linear / BN module, typed."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise ModelError(f"{type(mod).__name__} has no weight tensor")
    return w


def is_depthwise(mod: nn.Module) -> bool:
    """A conv with one input and one output channel per group (``groups == in == out channels > 1``)."""
    return isinstance(mod, nn.Conv2d) and mod.groups == mod.in_channels == mod.out_channels and mod.groups > 1


def is_grouped(mod: nn.Module) -> bool:
    """A grouped conv that is not depthwise: it keeps ``groups`` and shrinks the group width."""
    return isinstance(mod, nn.Conv2d) and mod.groups > 1 and not is_depthwise(mod)


@dataclass(frozen=True)
class Position:
    """One weight slice that belongs to a channel: ``kind`` is out | in | bn | dw (depthwise filter)."""

    module: str
    kind: str
    index: int


@dataclass
class ChannelGroup:
    """One removable channel: every weight slice that goes with it."""

    positions: list[Position]
    frozen: bool = False
    reason: str | None = None  # why it is frozen, in a few words (the first reason met in graph order)

    def of(self, kind: str) -> list[Position]:
        return [p for p in self.positions if p.kind == kind]


@dataclass
class Graph:
    """The result of :func:`trace`."""

    model: nn.Module
    groups: list[ChannelGroup]
    layer_out: dict[str, list[int]]  # layer -> group id of each output channel (filter)
    layer_in: dict[str, list[int]]  # layer -> group id of each weight input column (channel / feature)
    shapes: dict[str, tuple[int, ...]]  # layer -> its output shape (for FLOPs)
    frozen_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """Conv2d / Linear layers, in graph order."""
        return list(self.shapes)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def filter_groups(self, layer: str) -> list[int]:
        """Distinct prunable group ids of a layer's filters (depthwise: of its channels)."""
        ids = dict.fromkeys(self.layer_out.get(layer, []))
        return [g for g in ids if not self.groups[g].frozen]

    def channel_groups(self, layer: str) -> list[int]:
        ids = dict.fromkeys(self.layer_in.get(layer, []))
        return [g for g in ids if not self.groups[g].frozen]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


class _Tracer:
    """One walk over the fx graph; records positions per element, then folds them into groups."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.uf = _UnionFind()
        self.chans: dict[fx.Node, Chans] = {}
        self.positions: dict[int, list[Position]] = defaultdict(list)
        self.frozen: dict[int, str] = {}  # element -> why it is kept whole (a short phrase)
        self.reasons: dict[str, str] = {}
        self.layer_out: dict[str, list[int]] = {}
        self.layer_in: dict[str, list[int]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    # ---- helpers
    def shape(self, node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def fresh(self, node: fx.Node) -> Chans:
        shape = self.shape(node)
        return self.uf.new(shape[1]) if shape is not None and len(shape) >= 2 else None

    def freeze(self, ids: Chans, reason: str, short: str) -> None:
        """Keep ``ids`` whole; ``reason`` goes to ``Graph.frozen_reasons``, ``short`` to each group's ``reason``."""
        if ids:
            for e in ids:
                self.frozen.setdefault(e, short)
            self.reasons.setdefault(reason.split(":")[0], reason)

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        flat: list[Any] = []
        for a in (*node.args, *node.kwargs.values()):
            flat.extend(a if isinstance(a, list | tuple) else [a])
        return [a for a in flat if isinstance(a, fx.Node) and self.shape(a) is not None]

    def unknown(self, node: fx.Node, what: str) -> Chans:
        """An op the graph does not understand: its inputs' and outputs' channels are kept whole."""
        reason = f"{node.name}: {what} is not understood; its channels are kept"
        for a in self.tensor_args(node):
            self.freeze(self.chans.get(a), reason, f"consumed by an op the graph does not know ({what})")
        out = self.fresh(node)
        self.freeze(out, reason, f"produced by an op the graph does not know ({what})")
        return out

    # ---- walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.chans[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Chans:
        if node.op == "placeholder":
            out = self.fresh(node)
            self.freeze(out, "input: the model's input channels are kept", "model input")
            return out
        if node.op == "output":
            for a in self.tensor_args(node):
                self.freeze(self.chans.get(a), "output: the model's output channels are kept", "model output")
            return None
        if node.op == "get_attr":
            return self.unknown(node, f"parameter access {node.target}")
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)])
        return self.visit_call(node)

    def visit_module(self, node: fx.Node, mod: nn.Module) -> Chans:
        name = str(node.target)
        src = node.args[0] if node.args else None
        ins = self.chans.get(src) if isinstance(src, fx.Node) else None
        if isinstance(mod, nn.Conv2d):
            return self.conv(node, name, mod, ins)
        if isinstance(mod, nn.Linear):
            return self.linear(node, name, ins)
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d) and ins is not None:
            for i, e in enumerate(ins):
                self.positions[e].append(Position(name, "bn", i))
            return ins
        if isinstance(mod, nn.Flatten):
            return self.flatten(node, src)
        if isinstance(mod, PASS_MODULES):
            return ins
        return self.unknown(node, f"{type(mod).__name__} module {name}")

    def conv(self, node: fx.Node, name: str, mod: nn.Conv2d, ins: Chans) -> Chans:
        self.shapes[name] = self.shape(node) or ()
        if ins is None or len(ins) != mod.in_channels:
            return self.unknown(node, f"conv {name} with an untracked input")
        if is_depthwise(mod):
            for i, e in enumerate(ins):
                self.positions[e].append(Position(name, "dw", i))
            self.layer_out[name] = self.layer_in[name] = ins
            return ins
        if is_grouped(mod):
            return self.grouped(node, name, mod.groups, ins)
        return self.weighted(node, name, ins)

    def grouped(self, node: fx.Node, name: str, groups: int, ins: list[int]) -> Chans:
        """A grouped conv keeps ``groups`` and shrinks the group width: channel j of every group is one
        element (so the same channels go in every group), on the input side and on the filter side. Its
        weight ``[F, C / groups, KH, KW]`` reads local input channel j in column j."""
        width = len(ins) // groups
        self.tie(ins, width)
        for i, e in enumerate(ins):
            self.positions[e].append(Position(name, "in", i % width))
        out = self.fresh(node) or []
        self.tie(out, len(out) // groups)
        for f, e in enumerate(out):
            self.positions[e].append(Position(name, "out", f))
        self.layer_in[name], self.layer_out[name] = ins[:width], out
        return out

    def tie(self, ids: list[int], width: int) -> None:
        """Unite element ``k * width + j`` with element ``j`` for every group k."""
        for i in range(width, len(ids)):
            self.uf.union(ids[i], ids[i % width])

    def linear(self, node: fx.Node, name: str, ins: Chans) -> Chans:
        self.shapes[name] = self.shape(node) or ()
        mod = self.modules[name]
        assert isinstance(mod, nn.Linear)
        if ins is None or len(ins) != mod.in_features or len(self.shape(node) or ()) != 2:
            return self.unknown(node, f"linear {name} on an untracked or non-2-D input")
        return self.weighted(node, name, ins)

    def weighted(self, node: fx.Node, name: str, ins: list[int]) -> Chans:
        """A conv (groups=1) or linear: consumes ``ins``, produces one new element per filter."""
        for i, e in enumerate(ins):
            self.positions[e].append(Position(name, "in", i))
        out = self.fresh(node) or []
        for f, e in enumerate(out):
            self.positions[e].append(Position(name, "out", f))
        self.layer_in[name], self.layer_out[name] = ins, out
        return out

    def flatten(self, node: fx.Node, src: Any) -> Chans:
        """[N, C, H, W] -> [N, C*H*W]: channel c owns features c*H*W .. (c+1)*H*W - 1."""
        in_shape, out_shape = self.shape(src), self.shape(node)
        ins = self.chans.get(src) if isinstance(src, fx.Node) else None
        if ins is None or in_shape is None or out_shape is None or len(out_shape) != 2:
            return self.unknown(node, "reshape")
        if out_shape[0] != in_shape[0] or len(in_shape) < 2:
            return self.unknown(node, "reshape across the batch")
        spatial = 1
        for s in in_shape[2:]:
            spatial *= s
        return [e for e in ins for _ in range(spatial)]

    def visit_call(self, node: fx.Node) -> Chans:
        target = node.target
        first = node.args[0] if node.args else None
        ins = self.chans.get(first) if isinstance(first, fx.Node) else None
        if node.op == "call_method" and target in ("size", "dim"):
            return None
        if target in PASS_FUNCTIONS or (node.op == "call_method" and target in PASS_METHODS):
            return ins
        if target in JOIN_FUNCTIONS or (node.op == "call_method" and target in JOIN_METHODS):
            return self.join(node)
        if target is torch.cat:
            return self.cat(node)
        if target is torch.flatten or (node.op == "call_method" and target in ("flatten", "view", "reshape")):
            shape = self.shape(node)
            return ins if shape is not None and shape == self.shape(first) else self.flatten(node, first)
        if (node.op == "call_method" and target == "mean") or target is torch.mean:
            return self.mean(node, ins)
        return self.unknown(node, f"{node.op} {getattr(target, '__name__', target)}")

    def join(self, node: fx.Node) -> Chans:
        """Elementwise binary op: operands with a channel dim share channels position by position."""
        out_shape = self.shape(node)
        operands = [self.chans.get(a) for a in node.args if isinstance(a, fx.Node)]
        tracked = [c for c in operands if c is not None]
        if not tracked or out_shape is None:
            return self.unknown(node, f"elementwise {node.target}")
        width = out_shape[1] if len(out_shape) >= 2 else 0
        for a in node.args:
            shape = self.shape(a) if isinstance(a, fx.Node) else None
            if shape is not None and len(shape) >= 2 and shape[1] not in (1, width):
                return self.unknown(node, f"elementwise {node.target} with mismatched channels")
        full = [c for c in tracked if len(c) == width]
        if not full:
            return self.unknown(node, f"elementwise {node.target} with broadcast channels")
        for other in full[1:]:
            for a, b in zip(full[0], other, strict=True):
                self.uf.union(a, b)
        for c in tracked:
            if len(c) != width:  # a [N, 1, ...] operand broadcast over channels: it cannot shrink
                reason = f"{node.name}: broadcast operand; its channel is kept"
                self.freeze(c, reason, f"broadcast over channels at {node.name}")
        return full[0]

    def cat(self, node: fx.Node) -> Chans:
        parts = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not isinstance(parts, list | tuple) or dim not in (1, -3):
            return self.unknown(node, "concat along a non-channel dim")
        chans = [self.chans.get(p) if isinstance(p, fx.Node) else None for p in parts]
        if any(c is None for c in chans):
            return self.unknown(node, "concat of untracked tensors")
        return [e for c in chans if c is not None for e in c]

    def mean(self, node: fx.Node, ins: Chans) -> Chans:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = dims if isinstance(dims, list | tuple) else [dims]
        return ins if dims and all(isinstance(d, int) and d >= 2 for d in dims) else self.unknown(node, "mean")

    def build(self, model: nn.Module) -> Graph:
        roots: dict[int, int] = {}
        groups: list[ChannelGroup] = []
        for e in range(len(self.uf.parent)):
            root = self.uf.find(e)
            if root not in roots:
                roots[root] = len(groups)
                groups.append(ChannelGroup([]))
            g = groups[roots[root]]
            g.positions.extend(self.positions.get(e, []))
            if e in self.frozen:
                g.frozen, g.reason = True, g.reason or self.frozen[e]
        for g in groups:
            g.positions = list(dict.fromkeys(g.positions))
        gid = lambda ids: [roots[self.uf.find(e)] for e in ids]  # noqa: E731
        return Graph(
            model=model,
            groups=groups,
            layer_out={k: gid(v) for k, v in self.layer_out.items()},
            layer_in={k: gid(v) for k, v in self.layer_in.items()},
            shapes=self.shapes,
            frozen_reasons=self.reasons,
        )


def _propagate_shapes(gm: fx.GraphModule, example: tuple[torch.Tensor, ...]) -> None:
    """Every node's output shape (``meta["tensor_meta"]``). On fake tensors, which compute shapes only (the
    cost of a forward is otherwise most of tracing a large net); a forward fake tensors cannot run (one that
    reads values) runs on the real example."""
    if not _fake_shapes(gm, example):
        with torch.no_grad():
            ShapeProp(gm).propagate(*example)


class _FakeShapeProp(ShapeProp):
    """ShapeProp that passes the input of a shape-preserving module through instead of running it (on fake
    tensors a BatchNorm still runs its decomposition)."""

    def call_module(self, target: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        if isinstance(self.fetch_attr(str(target)), SAME_SHAPE_MODULES) and len(args) == 1 and not kwargs:
            return args[0]
        return super().call_module(target, args, kwargs)


def _fake_shapes(gm: fx.GraphModule, example: tuple[torch.Tensor, ...]) -> bool:
    prop = _FakeShapeProp(gm)  # made outside the fake mode, which would otherwise copy the model into it
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            prop.propagate(*(mode.from_tensor(t) for t in example))
    except Exception:
        return False
    return True


@one_thread()
def trace(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Graph:
    """Trace ``model`` on ``example_inputs`` and return its dependency groups (model left unchanged)."""
    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "structured pruning needs a traceable forward — move data-dependent Python control flow out of it"
        ) from None
    was_training = model.training
    model.eval()
    try:
        _propagate_shapes(gm, example)
    finally:
        model.train(was_training)
    tracer = _Tracer(gm)
    tracer.run()
    return tracer.build(model)
