"""Coverage report (``ac prune --explain``): per prunable layer, what each scheme can prune there and, for
anything kept whole, why.

Counts are read off the dependency graph (:func:`ac_toolchain.graph.trace`), not off a plan, so they hold
at every rate: *filters* are the layer's output channels (``filter``, the first half of ``filter+column``),
*channels* its input channels (``channel``; a linear's input features map back to the channels of the tensor
it flattens), *columns* the ``(c, kh, kw)`` columns of its GEMM matrix (``column``, the second half). A filter
or channel is prunable when its dependency group is not frozen; the reason of a frozen group is the one
recorded where the graph froze it (``ChannelGroup.reason``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn

from ac_toolchain.graph import Graph, is_depthwise, is_grouped, trace, weight_of


@dataclass(frozen=True)
class Part:
    """One kind of structure of a layer: how many some scheme can remove, and why the others stay."""

    prunable: int
    total: int
    reasons: tuple[str, ...] = ()  # why the rest is kept whole, one short phrase each

    def __str__(self) -> str:
        return f"{self.prunable}/{self.total}"


@dataclass(frozen=True)
class LayerCoverage:
    """One row of the report: a conv or linear layer."""

    layer: str
    kind: str  # conv | grouped g=G (G groups) | depthwise | linear
    filters: Part
    channels: Part
    columns: Part
    notes: tuple[str, ...] = ()  # how the prunable structures go (group-wise, with the channel, ...)

    @property
    def kept_whole(self) -> list[str]:
        """Every reason, prefixed with the structure it keeps: ``filters frozen: model output``."""
        parts = {"filters frozen": self.filters, "channels frozen": self.channels, "columns": self.columns}
        return [f"{what}: {r}" for what, part in parts.items() for r in part.reasons]


# (test, kind, note, why columns stay): the first match names a layer; registry order matters
KINDS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], str], str, str | None]] = [
    (is_depthwise, lambda m: "depthwise", "its filters go with their channels",
     "depthwise conv keeps its columns"),
    (is_grouped, lambda m: f"grouped g={getattr(m, 'groups', 1)}",
     "filters and channels go group-wise (the same ones in every group)", "grouped conv keeps its columns"),
    (lambda m: isinstance(m, nn.Conv2d), lambda m: "conv", "", None),
    (lambda m: isinstance(m, nn.Linear), lambda m: "linear", "", None),
]  # fmt: skip
UNTRACKED = "the graph does not track this layer"


def _kind(mod: nn.Module) -> tuple[str, str, str | None]:
    for test, name, note, columns in KINDS:
        if test(mod):
            return name(mod), note, columns
    return type(mod).__name__, "", None


def _part(graph: Graph, ids: list[int] | None, total: int, scale: int = 1) -> Part:
    """Prunable entries among ``ids`` (a group id per filter or channel), ``scale`` channels each."""
    if ids is None:
        return Part(0, total, (UNTRACKED,))
    groups = [graph.groups[g] for g in ids]
    reasons = dict.fromkeys(g.reason or "frozen" for g in groups if g.frozen)
    return Part(scale * sum(not g.frozen for g in groups), total, tuple(reasons))


def _channels(mod: nn.Module, ids: list[int] | None) -> list[int] | None:
    """A group id per input channel: a linear's features collapse to one per run (a flattened channel)."""
    if ids is None or not isinstance(mod, nn.Linear):
        return ids
    return [g for i, g in enumerate(ids) if i == 0 or ids[i - 1] != g]


def _columns(weight: torch.Tensor, why_kept: str | None) -> Part:
    total = weight[0].numel()
    return Part(0, total, (why_kept,)) if why_kept else Part(total, total)


def layer_coverage(graph: Graph, layer: str) -> LayerCoverage:
    """What each scheme can prune in one conv / linear layer of ``graph``."""
    mod = graph.module(layer)
    weight = weight_of(mod)
    kind, note, why_columns = _kind(mod)
    ins = _channels(mod, graph.layer_in.get(layer))
    groups = int(getattr(mod, "groups", 1)) if is_grouped(mod) else 1  # layer_in: one group's channels
    in_total = len(ins) * groups if ins is not None else int(weight.shape[1]) * groups
    return LayerCoverage(
        layer=layer,
        kind=kind,
        filters=_part(graph, graph.layer_out.get(layer), weight.shape[0]),
        channels=_part(graph, ins, in_total, groups),
        columns=_columns(weight, why_columns),
        notes=(note,) if note else (),
    )


def coverage(graph: Graph) -> list[LayerCoverage]:
    """One row per conv / linear layer of ``graph``, in graph order."""
    return [layer_coverage(graph, layer) for layer in graph.layers]


def explain(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> list[LayerCoverage]:
    """Trace ``model`` and report, per conv / linear layer, what each scheme can prune (model unchanged)."""
    return coverage(trace(model, example_inputs))


def coverage_table(rows: list[LayerCoverage], title: str = "what each scheme can prune") -> Table:
    """The rows as a rich table: prunable/total per structure and why anything is kept whole; how the
    prunable structures of special kinds go is the caption."""
    notes = dict.fromkeys(f"{r.kind.split(' g=')[0]}: {n}" for r in rows for n in r.notes)
    table = Table(title=title, caption="\n".join(notes) or None)
    counts = ("filters", "channels", "columns")
    table.add_column("layer", overflow="fold")
    table.add_column("kind")
    for col in counts:
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("kept whole because", ratio=1)
    for r in rows:
        why = "; ".join(r.kept_whole) or "—"
        table.add_row(r.layer, r.kind, str(r.filters), str(r.channels), str(r.columns), why)
    return table
