"""The analytic cost of a pruned structure: params and MACs from the dependency graph and weight shapes.

This is the project's one cost function. It counts what :func:`ac_toolchain.compact.compact` would keep,
without building anything: no tracing, no compaction, no reading of weight values (except
:func:`masks_cost`, whose input *is* a zero pattern). The rules mirror the compactor step by step:

1. A dependency group goes when no consumer reads it: every ``in`` slice (conv input channel, linear input
   feature) is zero. Frozen groups and groups without consumers never go.
2. A layer never loses all its inputs or outputs: the first group of such a layer stays (zero, but present).
3. A conv (groups=1) or linear keeps ``rows`` filters (groups not gone) and ``cols`` GEMM columns: the columns
   of kept input channels that are non-zero in some kept filter. When none is, the compactor keeps every
   column of the kept channels (no gather), and so does this count; a conv with non-zero padding modes or
   string padding never gathers. Params ``rows * cols (+ rows)``, MACs ``rows * cols * H_out * W_out``.
4. A depthwise conv keeps its live channels' filters (a single one left becomes a dense 1-channel conv,
   which gathers like rule 3). A grouped conv counts like rule 3 over its weight ``[F, C / groups, KH, KW]``
   (the same columns kept in every group), without gathering. Layers on untracked inputs count whole.
5. BatchNorm keeps its affine entries of live channels; any other module counts its parameters whole, when
   the forward calls it (``used_modules``; None counts every module).

FLOPs are multiply-accumulates of conv / linear layers per sample, as in :mod:`ac_toolchain.count`. Latency,
when a :class:`~ac_toolchain.cost.latency_model.LatencyModel` is given, is each conv's table looked up at its kept
filters, kept input channels and kept columns (rule 3), plus the model's measured rest.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ac_toolchain.graph import Graph, is_depthwise, weight_of

if TYPE_CHECKING:
    from ac_toolchain.cost.latency_model import LatencyModel
    from ac_toolchain.prune.schemes import Plan


@dataclass(frozen=True)
class Cost:
    """Parameter elements, multiply-accumulates (conv / linear) per sample and, with a latency model, the
    predicted latency in its unit (0 without one)."""

    params: int
    flops: int
    latency: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops, self.latency + other.latency)


# ---- layer geometry (shapes only)
def _tracked(graph: Graph) -> list[str]:
    """Layers the graph tracks channel by channel (the rest are kept whole)."""
    return [n for n in graph.layers if n in graph.layer_in and n in graph.layer_out]


def _taps(graph: Graph, layer: str) -> int:
    """GEMM columns per input channel: KH*KW for a conv, 1 for a linear."""
    return math.prod(weight_of(graph.module(layer)).shape[2:])


def _spatial(graph: Graph, layer: str) -> int:
    shape = graph.shapes.get(layer, ())
    return shape[2] * shape[3] if len(shape) == 4 else 1


def _column_groups(graph: Graph, layer: str) -> list[int]:
    """Group id of each GEMM column, in PyTorch's (c, kh, kw) order."""
    taps = _taps(graph, layer)
    return [g for g in graph.layer_in[layer] for _ in range(taps)]


def _outside(ids: list[int], groups: Collection[int]) -> torch.Tensor:
    """bool [len(ids)]: the id is not in ``groups``."""
    return torch.tensor([g not in groups for g in ids], dtype=torch.bool)


def _gathers(mod: nn.Module) -> bool:
    """Whether the compactor can gather columns of this (dense) layer."""
    if isinstance(mod, nn.Conv2d):
        return mod.groups == 1 and mod.padding_mode == "zeros" and isinstance(mod.padding, tuple)
    return isinstance(mod, nn.Linear)


# ---- compactor rules 1 and 2
def _unread(graph: Graph, read: Mapping[str, list[bool]]) -> set[int]:
    """Groups no consumer reads (``read[layer][c]``: some entry of input channel c is non-zero)."""
    gone = set()
    for gid, group in enumerate(graph.groups):
        ins = group.of("in")
        if not group.frozen and ins and not any(read[p.module][p.index] for p in ins):
            gone.add(gid)
    return gone


def _keep_one_per_layer(graph: Graph, gone: set[int]) -> set[int]:
    """The compactor's ``_no_empty_layers``: a layer that would lose every input or output keeps its first."""
    for side in (graph.layer_out, graph.layer_in):
        for ids in side.values():
            if ids and all(g in gone for g in ids):
                gone = gone - {ids[0]}
    return gone


# ---- counting (rules 3-5), given the groups that go and each layer's non-zero columns
def _layer_cost(
    graph: Graph, layer: str, gone: set[int], nonzero: torch.Tensor | None, latency: LatencyModel | None = None
) -> Cost:
    """``nonzero``: bool [K] GEMM columns with a non-zero entry in a kept filter; None: kept whole."""
    mod, spatial = graph.module(layer), _spatial(graph, layer)
    if nonzero is None:
        macs = weight_of(mod).numel() * spatial
        return Cost(sum(p.numel() for p in mod.parameters(recurse=False)), macs, _time(latency, layer, None, macs))
    live = _outside(_column_groups(graph, layer), gone)
    n_all, n_nonzero = int(live.sum()), int((nonzero & live).sum())
    rows = sum(g not in gone for g in graph.layer_out[layer])
    gather = n_nonzero > 0 and _gathers(mod)
    bias = rows if getattr(mod, "bias", None) is not None else 0
    if is_depthwise(mod):  # one weight row per channel; a single channel left is a dense conv
        cols = n_nonzero if gather and rows == 1 else n_all
        return Cost(cols + bias, cols * spatial, _time(latency, layer, None, cols * spatial))
    cols = n_nonzero if gather else n_all
    time = _time(latency, layer, (rows, n_all / _taps(graph, layer), cols), rows * cols * spatial)
    return Cost(rows * cols + bias, rows * cols * spatial, time)


def _time(latency: LatencyModel | None, layer: str, kept: tuple[int, float, int] | None, macs: int) -> float:
    """A layer's predicted cost: its table at (filters, input channels, columns) kept (None: dense), or the
    model's cost per MAC for a layer without a table."""
    if latency is None:
        return 0.0
    table = latency.layers.get(layer)
    if table is None:
        return latency.per_mac * macs
    return table.dense() if kept is None else table.predict(*kept)


def _bn_cost(graph: Graph, gone: set[int]) -> tuple[Cost, set[str]]:
    """Affine entries of the live channels of every BN the graph tracks; and those BN names."""
    live: dict[str, int] = {}
    for gid, group in enumerate(graph.groups):
        for p in group.of("bn"):
            live[p.module] = live.get(p.module, 0) + (gid not in gone)
    params = 0
    for name, n in live.items():  # running stats are buffers: not counted
        params += sum(n if p.dim() == 1 else p.numel() for p in graph.module(name).parameters(recurse=False))
    return Cost(params, 0), set(live)


def _tally(
    graph: Graph, gone: set[int], nonzero: Mapping[str, torch.Tensor], used: Collection[str] | None,
    latency: LatencyModel | None = None,
) -> Cost:  # fmt: skip
    total = Cost(0, 0, latency.rest if latency is not None else 0.0)
    for layer in graph.layers:
        total += _layer_cost(graph, layer, gone, nonzero.get(layer), latency)
    bn, bn_names = _bn_cost(graph, gone)
    counted = set(graph.layers) | bn_names
    for name, mod in graph.model.named_modules():  # every other module the forward calls counts whole
        if name not in counted and (used is None or name in used):
            total += Cost(sum(p.numel() for p in mod.parameters(recurse=False)), 0)
    return total + bn


# ---- from a structure (groups + kept columns)
def _plan_nonzero(graph: Graph, layer: str, dead: set[int], rows: list[int], keep: torch.Tensor | None) -> torch.Tensor:
    """Columns a pruned model has non-zero in the filters ``rows``: kept, of a live channel, some filter live."""
    mod = graph.module(layer)
    cols = _outside(_column_groups(graph, layer), dead)
    if is_depthwise(mod):
        return cols  # each channel is its own filter
    if keep is not None:
        cols = cols & keep.to(torch.bool).cpu()
    return cols if any(g not in dead for g in rows) else torch.zeros_like(cols)


def structure_cost(
    graph: Graph,
    dead: Collection[int],
    columns: Mapping[str, torch.Tensor],
    used_modules: Collection[str] | None = None,
    latency: LatencyModel | None = None,
) -> Cost:
    """Params / MACs (and, with ``latency``, the predicted latency) of what survives when the groups ``dead`` are
    removed and each layer keeps only the GEMM columns marked True in ``columns[layer]`` (bool [C*KH*KW] or
    [in_features]; absent: all columns).

    Like the compactor on the pruned model, a group that loses every column in all its consumers goes too, and
    a layer left without inputs or outputs keeps one group. ``columns`` of depthwise / grouped convs are
    ignored. ``used_modules``: names of the modules the forward calls (:func:`called_modules`), so that
    modules it skips are not counted; None counts every module.
    """
    dead = set(dead)
    dense = [n for n in _tracked(graph) if not is_depthwise(graph.module(n))]
    read: dict[str, list[bool]] = {}
    for layer in dense:
        nonzero = _plan_nonzero(graph, layer, dead, graph.layer_out[layer], columns.get(layer))
        read[layer] = nonzero.view(-1, _taps(graph, layer)).any(dim=1).tolist()
    gone = _keep_one_per_layer(graph, _unread(graph, read))
    nonzero_of = {}
    for layer in _tracked(graph):
        kept_rows = [g for g in graph.layer_out[layer] if g not in gone]
        nonzero_of[layer] = _plan_nonzero(graph, layer, dead, kept_rows, columns.get(layer))
    return _tally(graph, gone, nonzero_of, used_modules, latency)


def plan_cost(plan: Plan, used_modules: Collection[str] | None = None, latency: LatencyModel | None = None) -> Cost:
    """The cost of a pruning plan: its pruned groups removed, its kept columns kept."""
    return structure_cost(plan.graph, plan.pruned_groups, plan.columns, used_modules, latency)


# ---- from 0/1 masks
def _live_entries(graph: Graph, masks: Mapping[str, torch.Tensor], layer: str) -> torch.Tensor:
    """bool GEMM view [F, K] of a layer's non-zero entries: its mask, or its live weight if it has none."""
    mask = masks.get(f"{layer}.weight")
    source = mask if mask is not None else weight_of(graph.module(layer))
    return source.detach().cpu().ne(0).reshape(source.shape[0], -1)


def masks_cost(
    graph: Graph, masks: Mapping[str, torch.Tensor], used_modules: Collection[str] | None = None,
    latency: LatencyModel | None = None,
) -> Cost:  # fmt: skip
    """The cost of the structure 0/1 masks leave (``{param name: mask of its shape}``).

    A group goes when every ``in`` slice of it is zero in the mask (in the weight, for a parameter without a
    mask) and it is not frozen; a column stays when a kept filter has a non-zero entry in it. Exact for any
    zero pattern, not only for masks a plan produced.
    """
    entries = {layer: _live_entries(graph, masks, layer) for layer in _tracked(graph)}
    read: dict[str, list[bool]] = {}
    for layer, live in entries.items():
        if not is_depthwise(graph.module(layer)):
            read[layer] = live.any(dim=0).view(-1, _taps(graph, layer)).any(dim=1).tolist()
    gone = _keep_one_per_layer(graph, _unread(graph, read))
    nonzero_of = {}
    for layer, live in entries.items():
        if is_depthwise(graph.module(layer)):
            nonzero_of[layer] = live.reshape(-1)  # each channel is its own filter
        else:
            nonzero_of[layer] = live[_outside(graph.layer_out[layer], gone)].any(dim=0)
    return _tally(graph, gone, nonzero_of, used_modules, latency)


def called_modules(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> frozenset[str]:
    """Names of the modules one forward on ``example`` calls (eval mode, no grad; recorded with hooks).

    Run it once per model and pass it as ``used_modules``: the graph records the conv / linear / BN layers
    it tracks, not every module the forward calls.
    """
    names = {mod: name for name, mod in model.named_modules()}
    called: set[str] = set()

    def hook(mod: nn.Module, *_: Any) -> None:
        called.add(names[mod])

    handles = [mod.register_forward_hook(hook) for mod in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*(example if isinstance(example, tuple) else (example,)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return frozenset(called)
