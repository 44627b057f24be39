"""Structured pruning schemes: importance, the "keep the k best" projection, and masks.

Schemes (docs/algorithm.md, "Vocabulary"), per layer:

* ``filter``  — output channels, ranked by the L2 norm of every filter row in their dependency group;
* ``channel`` — input channels, ranked by the L2 norm of the layer's input columns ``W[:, c]``; removing one
  removes the producers' filters too (the same dependency group);
* ``column``  — one ``(c, kh, kw)`` position of a conv across all its filters (a linear's input feature),
  ranked by the column's L2 norm over the filters still kept; the rate applies to the columns whose input
  channel is still there (an earlier layer's filter pruning already removed the others);
* ``filter+column`` — filters first, then columns of what is left, each at ``1 - sqrt(1 - rate)`` so that
  the kept fraction of the GEMM matrix is ``1 - rate``; a layer with no prunable filters (the classifier,
  whose outputs are the model's) takes the whole rate on its columns.

Kept counts are exact: a layer with n structures keeps ``max(1, round((1 - rate) * n))`` (Python's round:
halves go to the even neighbour). One exception: channel pruning never removes every filter of a producer
(say, one branch of a concat); it keeps that producer's best channel, which can keep more than asked when a
layer reads more producers than it may keep channels.

Filters and channels of layers coupled by a residual add or a mul form one dependency group; the first
layer of a group in graph order sets the rate, later ones are reported as coupled.

Grouped convs (``groups`` g > 1, not depthwise) keep ``groups`` and shrink the group width: channel j of every
group is one dependency group (with its producers' filters and BN entries), so ``filter`` and ``channel`` rank
and remove the same channels in every group. A grouped conv with filter groups of width b has n = b structures
(fewer where other layers couple them further, e.g. through an add) and keeps ``g * max(1, round((1 - rate) * n))``
filters; its input side likewise. ``column`` leaves grouped and depthwise convs alone (0 columns reported).
A BatchNorm on a tensor that also feeds an add (a re-parameterisable block's identity branch) is in that
tensor's groups and loses their channels with them.

Scores are read from the model's weights, or from given tensors (``weights={layer: tensor}``): ADMM's Z-step
projects ``W + U``, not the live weights, with this same function (:func:`project`). Keeping the k largest
L2 norms is the exact Euclidean projection onto "at most k non-zero structures" of each layer for ``filter``,
``channel`` and ``column``; ``filter+column`` is greedy (best filters, then the best columns of those; the gap
to the optimum is measured in docs/algorithm.md). A group coupled over several layers is scored by its
combined norm over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ac_toolchain.errors import ConfigError, ModelError
from ac_toolchain.graph import Graph, Position, one_thread, trace, weight_of
from ac_toolchain.scheme_registry import CHANNEL, COLUMN, DEFAULT_SCHEME, FILTER, FILTER_COLUMN, SCHEMES

Masks = dict[str, torch.Tensor]


def kept_count(total: int, rate: float) -> int:
    """Structures kept at ``rate``: Python round of (1 - rate) * total, at least one."""
    return max(1, round((1.0 - rate) * total))


def keep_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [n] mask of the k largest scores (the Euclidean projection onto "at most k non-zero")."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[torch.topk(scores, min(k, len(scores)), sorted=False).indices] = True
    return keep


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """[F, C, KH, KW] (or [F, C]) -> [F, C*KH*KW]: the im2col GEMM matrix, columns in (c, kh, kw) order."""
    return weight.reshape(weight.shape[0], -1)


@dataclass
class LayerPlan:
    """What one layer loses: dependency groups (filters / channels) and its own columns."""

    name: str
    scheme: str
    rate: float
    groups_total: int = 0
    groups_kept: int = 0
    columns_total: int = 0
    columns_kept: int = 0
    coupled_to: str | None = None


@dataclass
class Memo:
    """Scores that depend only on the weights, so plans of the same weights at other rates can share them:
    group norms, and each layer's squared GEMM matrix (column norms over any set of kept rows)."""

    groups: dict[tuple[int, tuple[str, ...], str | None], float] = field(default_factory=dict)
    squares: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Plan:
    graph: Graph
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> tensor scored instead of its weight
    layers: list[LayerPlan] = field(default_factory=list)
    pruned_groups: set[int] = field(default_factory=set)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> bool [K] kept columns
    decided: set[int] = field(default_factory=set)  # groups whose fate a layer already set
    owner: dict[int, str] = field(default_factory=dict)  # group -> the layer that set it
    memo: Memo = field(default_factory=lambda: Memo())  # scores of these weights, shareable between plans

    def weight(self, layer: str) -> torch.Tensor:
        """The tensor a layer is scored by: the given one, else the module's weight (detached)."""
        given = self.weights.get(layer)
        return (given if given is not None else weight_of(self.graph.module(layer))).detach()


def _slice_norm2(weight: torch.Tensor, p: Position) -> float:
    """Squared L2 norm of the weight slice at a position (a filter row or an input column)."""
    w = weight.detach()
    part = w[:, p.index] if p.kind == "in" else w[p.index]
    return float(part.double().square().sum())


def group_score(plan: Plan, gid: int, kinds: tuple[str, ...], only: str | None = None) -> float:
    """L2 norm of a group over every slice of the given kinds (all coupled layers, or only one); memoised in
    ``plan.memo``, which plans of the same weights may share (the search plans many rates on one model)."""
    key = (gid, kinds, only)
    if key not in plan.memo.groups:
        plan.memo.groups[key] = _group_score(plan, gid, kinds, only)
    return plan.memo.groups[key]


def _group_score(plan: Plan, gid: int, kinds: tuple[str, ...], only: str | None) -> float:
    total = 0.0
    for p in plan.graph.groups[gid].positions:
        if p.kind in kinds and (only is None or p.module == only):
            total += _slice_norm2(plan.weight(p.module), p)
    return math.sqrt(total)


def _protected(plan: Plan, undecided: list[int], scores: dict[int, float]) -> set[int]:
    """One group per producer layer that would otherwise lose every filter (a zero-width layer)."""
    graph, keep = plan.graph, set[int]()
    producers = {p.module for g in undecided for p in graph.groups[g].positions if p.kind in ("out", "dw")}
    for layer in sorted(producers):
        alive = [g for g in dict.fromkeys(graph.layer_out.get(layer, [])) if g not in plan.pruned_groups]
        if alive and all(g in scores for g in alive) and not keep & set(alive):
            keep.add(max(alive, key=lambda g: scores[g]))
    return keep


def _plan_groups(plan: Plan, entry: LayerPlan, candidates: list[int], score: Callable[[int], float]) -> None:
    """Keep the best ``kept_count`` undecided groups; groups decided by an earlier layer stay as they are."""
    undecided = [g for g in candidates if g not in plan.decided]
    if candidates and not undecided:
        entry.coupled_to = plan.owner[candidates[0]]
    scores = {g: score(g) for g in undecided}
    keep = _protected(plan, undecided, scores)
    for g in sorted(undecided, key=lambda g: -scores[g]):
        if len(keep) >= kept_count(len(undecided), entry.rate):
            break
        keep.add(g)
    for g in undecided:
        plan.decided.add(g)
        plan.owner[g] = entry.name
        if g not in keep:
            plan.pruned_groups.add(g)
    entry.groups_total = len(set(candidates))
    entry.groups_kept = len([g for g in set(candidates) if g not in plan.pruned_groups])


def _alive(ids: list[int], n: int, pruned: set[int], repeat: int = 1) -> torch.Tensor:
    """Bool [n]: entries whose group is not pruned (``repeat``: columns per input channel of a conv)."""
    alive = torch.ones(n, dtype=torch.bool)
    if len(ids) * repeat == n:
        gone = torch.tensor([g in pruned for g in ids], dtype=torch.bool)
        alive = ~gone.repeat_interleave(repeat)
    return alive


def _plan_columns(plan: Plan, entry: LayerPlan, rate: float) -> None:
    """Keep the best ``kept_count`` of the columns whose input channel is still there (norm over kept rows)."""
    mod = plan.graph.module(entry.name)
    if isinstance(mod, nn.Conv2d) and mod.groups > 1:
        return  # grouped / depthwise convs have no shared columns; left alone (reported as 0 columns)
    if entry.name not in plan.memo.squares:
        plan.memo.squares[entry.name] = gemm_view(plan.weight(entry.name)).double().square()
    w = plan.memo.squares[entry.name]
    graph, pruned = plan.graph, plan.pruned_groups
    rows = _alive(graph.layer_out.get(entry.name, []), w.shape[0], pruned)
    ins = graph.layer_in.get(entry.name, [])
    cols = _alive(ins, w.shape[1], pruned, repeat=w.shape[1] // max(len(ins), 1))
    norms = (rows.to(w.dtype) @ w).clamp_min(0).sqrt()  # [K]: column norms over the kept rows
    norms[~cols] = -1.0  # never chosen over a live column
    entry.columns_total = w.shape[1]
    keep = keep_topk(norms, kept_count(int(cols.sum()), rate)) & cols
    entry.columns_kept = int(keep.sum())
    plan.columns[entry.name] = keep


def _filter(plan: Plan, e: LayerPlan, rate: float) -> None:
    groups = plan.graph.filter_groups(e.name)
    _plan_groups(plan, e, groups, lambda gid: group_score(plan, gid, ("out", "dw")))


def _channel(plan: Plan, e: LayerPlan, rate: float) -> None:
    groups = plan.graph.channel_groups(e.name)
    _plan_groups(plan, e, groups, lambda gid: group_score(plan, gid, ("in",), only=e.name))


def _column(plan: Plan, e: LayerPlan, rate: float) -> None:
    _plan_columns(plan, e, rate)


def filter_split(rate: float) -> float:
    """The rate filter+column applies to filters and to columns each: the GEMM matrix keeps ``1 - rate``."""
    return 1.0 - math.sqrt(1.0 - rate)


def rate_keeping(scheme: str, kept: int, total: int) -> float:
    """The rate at which a layer of ``total`` filters keeps exactly ``kept`` under ``scheme`` (filter or
    filter+column; filter+column's columns then keep the same fraction)."""
    keep = kept / total
    return 1.0 - keep if scheme == FILTER else 1.0 - keep * keep


def _filter_column(plan: Plan, e: LayerPlan, rate: float) -> None:
    if not plan.graph.filter_groups(e.name):  # e.g. the classifier: its columns take the whole rate
        _plan_columns(plan, e, rate)
        return
    split = filter_split(rate)
    e.rate = split
    _filter(plan, e, split)
    _plan_columns(plan, e, split)
    e.rate = rate


SCHEME_RULES: dict[str, Callable[[Plan, LayerPlan, float], None]] = {
    FILTER: _filter, CHANNEL: _channel, COLUMN: _column, FILTER_COLUMN: _filter_column,
}  # fmt: skip


def _per_layer(value: object, layers: list[str], what: str, check: Callable[[str, object], None]) -> dict:
    if not isinstance(value, dict):
        return {name: value for name in layers}
    unknown = [k for k in value if k not in layers]
    if unknown:
        raise ModelError(f"{what} names unknown layer(s) {unknown}; prunable layers: {', '.join(layers)}")
    for k, v in value.items():
        check(k, v)
    return dict(value)


def _check_rate(name: str, rate: object) -> None:
    if not isinstance(rate, int | float) or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"rate {rate!r} for {name} is out of range: rates are in [0, 1)")


def _check_scheme(name: str, scheme: object) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"scheme {scheme!r} for {name} is not one of: {', '.join(SCHEMES)}")


def prunable_layers(graph: Graph) -> list[str]:
    """Layers whose weights some scheme can shrink (the classifier only by its input columns)."""
    return graph.layers


@one_thread()
def plan_graph(
    graph: Graph,
    rates: float | dict[str, float],
    scheme: str | dict[str, str],
    weights: dict[str, torch.Tensor] | None = None,
    memo: Memo | None = None,
) -> Plan:
    """Decide, without touching the model, which groups and columns go; scores from ``weights`` if given.

    ``memo``: scores shared by plans of the same weights (filled in place); never share it across weights.
    """
    layers = prunable_layers(graph)
    if not isinstance(rates, dict):
        _check_rate("every layer", rates)
    if not isinstance(scheme, dict):
        _check_scheme("every layer", scheme)
    rate_of = _per_layer(rates, layers, "rates", _check_rate)
    scheme_of = _per_layer(scheme, layers, "scheme", _check_scheme)
    plan = Plan(graph, weights=dict(weights or {}), memo=memo if memo is not None else Memo())
    for name in layers:
        if name not in rate_of or name not in scheme_of:
            continue
        entry = LayerPlan(name, scheme_of[name], float(rate_of[name]))
        SCHEME_RULES[entry.scheme](plan, entry, entry.rate)
        plan.layers.append(entry)
    return plan


def plan_pruning(
    model: nn.Module, example_inputs: torch.Tensor, rates: float | dict[str, float], scheme: str | dict[str, str]
) -> Plan:
    """Trace ``model``, then :func:`plan_graph` on its live weights."""
    return plan_graph(trace(model, example_inputs), rates, scheme)


def _pruned_positions(plan: Plan) -> dict[tuple[str, str], list[int]]:
    """(parameter name, "in" | "out") -> indices to zero, over every position of every pruned group."""
    params = dict(plan.graph.model.named_parameters())
    where: dict[tuple[str, str], list[int]] = {}
    for gid in sorted(plan.pruned_groups):
        for p in plan.graph.groups[gid].positions:
            side = "in" if p.kind == "in" else "out"
            for pname in (f"{p.module}.weight", f"{p.module}.bias"):
                if pname in params and not (side == "in" and pname.endswith("bias")):
                    where.setdefault((pname, side), []).append(p.index)
    return where


@one_thread()
def masks_of(plan: Plan) -> Masks:
    """0/1 masks (per parameter) that zero every position of every pruned group and every pruned column."""
    params = dict(plan.graph.model.named_parameters())
    masks: Masks = {}
    for (pname, side), index in _pruned_positions(plan).items():
        mask = masks.setdefault(pname, torch.ones_like(params[pname], dtype=torch.float32))
        if side == "in":
            mask[:, index] = 0
        else:
            mask[index] = 0
    for name, keep in plan.columns.items():
        pname = f"{name}.weight"
        mask = masks.setdefault(pname, torch.ones_like(params[pname], dtype=torch.float32))
        gemm_view(mask)[:, ~keep] = 0
    return masks


def project(
    graph: Graph, rates: float | dict[str, float], scheme: str | dict[str, str], weights: dict[str, torch.Tensor]
) -> tuple[Masks, Plan]:
    """The Euclidean projection of the given tensors onto the structured sets: masks and the plan.

    ``weights`` maps layer names to tensors of their weights' shapes (ADMM: ``W + U``); layers not given are
    scored by their live weights. ``Z = weights[layer] * masks[layer + ".weight"]`` is then the projection.
    """
    plan = plan_graph(graph, rates, scheme, weights)
    return masks_of(plan), plan


@one_thread()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def prune_with_plan(
    model: nn.Module, example_inputs: torch.Tensor, rates: float | dict[str, float], scheme: str | dict[str, str]
) -> tuple[Masks, Plan]:
    """Plan, then zero the chosen structures in place; returns the masks and the plan (per-layer log)."""
    plan = plan_pruning(model, example_inputs, rates, scheme)
    masks = masks_of(plan)
    apply_masks(model, masks)
    return masks, plan


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    rates: float | dict[str, float],
    scheme: str | dict[str, str] = DEFAULT_SCHEME,
) -> Masks:
    """One-shot structured pruning in place: zeroes the chosen structures and returns the masks."""
    return prune_with_plan(model, example_inputs, rates, scheme)[0]
