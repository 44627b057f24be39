"""The search space: one decision unit per layer that owns a dependency group, and the rescaling that makes a
proposal meet the round's reduction goal.

A unit is a layer whose filters no earlier layer decides, plus the layers coupled to it by a residual add
(they share its filter groups, so they are not separate dimensions: they take the unit's rate and scheme).
A layer without prunable filters (the classifier) is a unit of its own. Each unit has a size (the params,
or MACs, of its members' weights; the experience rules order rates by it) and a role: ``first`` (the first
layer), ``classifier`` (no prunable filters) or ``body``.

Rates live in *keep space*: a unit's rate ``r`` is ``1 - exp(-z)`` for a pruning depth ``z >= 0``. Rescaling
multiplies every depth by one factor ``s`` (``keep_i = (1 - r_i) ** s``), which keeps the order of the rates,
never reaches 1 (rates are capped at ``cap``) and is found by bisection on the analytic cost
(:mod:`ac_toolchain.cost.analytic`) of the structure the projection would keep, until two neighbouring scales
differ by at most one structure (or the scale is known to 1e-5, where coupled structures move together).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch

from ac_toolchain.cost.analytic import Cost, masks_cost, plan_cost, structure_cost
from ac_toolchain.cost.latency_model import LatencyModel
from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import Graph, weight_of
from ac_toolchain.prune.schemes import Masks, Memo, Plan, filter_split, kept_count, masks_of, plan_graph, rate_keeping
from ac_toolchain.prune.spec import LayerSpec, Spec
from ac_toolchain.scheme_registry import COLUMN, FILTER, FILTER_COLUMN

CAP = 0.995  # the largest rate a unit may take: a layer keeps at least a sliver


@dataclass(frozen=True)
class Unit:
    name: str
    members: tuple[str, ...]
    size: int
    role: str  # "first" | "classifier" | "body"


def _size(graph: Graph, layer: str, objective: str) -> int:
    numel = weight_of(graph.module(layer)).numel()
    if objective == "params":  # flops and latency order units by MACs
        return numel
    shape = graph.shapes.get(layer, ())
    return numel * (shape[2] * shape[3] if len(shape) == 4 else 1)


def units_of(graph: Graph, objective: str) -> list[Unit]:
    """The decision units of a traced model, in graph order."""
    owner: dict[int, str] = {}
    members: dict[str, list[str]] = {}
    for layer in graph.layers:
        groups = graph.filter_groups(layer)
        owned = [owner[g] for g in groups if g in owner]
        if groups and len(owned) == len(groups):
            members[owned[0]].append(layer)  # coupled by a residual add: not a dimension of its own
            continue
        members[layer] = [layer]
        owner.update({g: layer for g in groups if g not in owner})
    first = graph.layers[0] if graph.layers else ""
    return [Unit(name, tuple(m), sum(_size(graph, x, objective) for x in m),
                 "first" if name == first else "body" if graph.filter_groups(name) else "classifier")
            for name, m in members.items()]  # fmt: skip


def spec_of(units: Sequence[Unit], rates: Sequence[float], schemes: Sequence[str]) -> Spec:
    """The per-layer spec (the ``--prune-rates`` format) of one rate and scheme per unit."""
    return {m: LayerSpec(float(r), s) for u, r, s in zip(units, rates, schemes, strict=True) for m in u.members}


def depths(rates: Sequence[float]) -> list[float]:
    return [-math.log1p(-min(r, CAP)) for r in rates]


def rates_at(z: Sequence[float], scale: float) -> list[float]:
    return [min(CAP, -math.expm1(-scale * d)) for d in z]


class GoalError(ConfigError):
    """A reduction goal that no spec of this space can meet."""


def combine(a: Masks, b: Masks | None) -> Masks:
    """Element-wise AND of two mask sets (a structure pruned in either stays pruned)."""
    if not b:
        return a
    out = dict(b)
    for name, m in a.items():
        out[name] = m * b[name] if name in b else m
    return out


@dataclass
class Space:
    """Units, costs and rescaling over one model's weights (copied: later training does not move them).

    ``base``: masks of earlier rounds; every proposal keeps them (a pruned structure stays pruned), and its
    cost is that of the combined masks. ``objective``: "params", "flops" or "latency" (which needs ``latency``,
    the device's tables; the rescaling then also aligns kept filters to the counts the tables say are free).
    """

    graph: Graph
    objective: str
    used: Collection[str] | None = None
    base: Masks | None = None
    latency: LatencyModel | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    memo: Memo = field(default_factory=Memo)

    def __post_init__(self) -> None:
        if self.objective == "latency" and self.latency is None:
            raise ConfigError("the latency objective needs the device's latency tables")
        self.units = units_of(self.graph, self.objective)
        self.weights = {n: weight_of(self.graph.module(n)).detach().clone() for n in self.graph.layers}
        self.dense = structure_cost(self.graph, (), {}, self.used, self.latency)  # unpruned, whatever its weights

    def plan(self, spec: Spec) -> Plan:
        rates = {k: v.rate for k, v in spec.items()}
        schemes = {k: v.scheme for k, v in spec.items()}
        return plan_graph(self.graph, rates, schemes, self.weights, memo=self.memo)

    def masks(self, spec: Spec) -> Masks:
        return combine(masks_of(self.plan(spec)), self.base)

    def cost(self, spec: Spec) -> Cost:
        return self._plan_cost(self.plan(spec))

    def _plan_cost(self, plan: Plan) -> Cost:
        if not self.base:
            return plan_cost(plan, self.used, self.latency)
        return masks_cost(self.graph, combine(masks_of(plan), self.base), self.used, self.latency)

    def value(self, cost: Cost) -> float:
        return float(getattr(cost, self.objective))

    def ratio(self, cost: Cost) -> float:
        return self.value(self.dense) / max(self.value(cost), 1e-9)

    def target_cost(self, reduction: float) -> float:
        return self.value(self.dense) / reduction

    def rescale(self, rates: Sequence[float], schemes: Sequence[str], reduction: float) -> list[float]:
        """Scale every unit's depth by one factor so the spec meets ``reduction`` (dense / pruned cost) with at
        most one structure more removed than needed; a clear error when even the cap cannot meet it."""
        z = depths(rates)
        if not any(z):
            z = [1.0] * len(z)
        goal = self.target_cost(reduction)
        spec = lambda s: spec_of(self.units, self.align(rates_at(z, s), schemes), schemes)  # noqa: E731
        plans: dict[float, Plan] = {}

        def meets(s: float) -> bool:
            plans[s] = self.plan(spec(s))
            return self.value(self._plan_cost(plans[s])) <= goal

        lo, hi = 0.0, 1.0
        while not meets(hi):
            if all(r >= CAP for r, d in zip(rates_at(z, hi), z, strict=True) if d > 0) or hi > 1e6:
                self._impossible(z, schemes, reduction)
            lo, hi = hi, 2 * hi
        plans.setdefault(lo, self.plan(spec(lo)))
        for _ in range(60):  # until one structure apart, or the scale is known to 1e-5 (coupled structures)
            if hi - lo < 1e-5 * hi or _one_structure_apart(plans[lo], plans[hi]):
                break
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if meets(mid) else (mid, hi)
        # rounded up to the 6 digits rates.json keeps: never more structures kept than what was costed
        return [min(CAP, math.ceil(r * 1e6) / 1e6) for r in self.align(rates_at(z, hi), schemes)]

    def align(self, rates: Sequence[float], schemes: Sequence[str]) -> list[float]:
        """With the latency objective, each unit whose first conv has a table keeps the most filters that cost
        no more than the count its rate keeps (:meth:`LayerTable.aligned`: a part-filled tile that costs as
        much as a full one is filled); other objectives leave the rates as they are."""
        if self.objective != "latency" or self.latency is None:
            return list(rates)
        out = list(rates)
        for i, (unit, rate, scheme) in enumerate(zip(self.units, rates, schemes, strict=True)):
            table, total = self.latency.layers.get(unit.name), len(self.graph.filter_groups(unit.name))
            if table is None or scheme == COLUMN or not total or rate <= 0:
                continue
            kept = kept_count(total, rate if scheme == FILTER else filter_split(rate))
            aligned = table.aligned(kept)
            out[i] = rate if aligned == kept else rate_keeping(scheme, aligned, total)
        return out

    def check_reachable(self, reduction: float) -> None:
        """Raise :class:`GoalError` unless filter+column at the cap everywhere meets ``reduction``."""
        schemes = [FILTER_COLUMN] * len(self.units)
        if self.ratio(self.cost(spec_of(self.units, [CAP] * len(self.units), schemes))) < reduction:
            self._impossible([1.0] * len(self.units), schemes, reduction)

    def _impossible(self, z: list[float], schemes: Sequence[str], reduction: float) -> None:
        best = self.ratio(self.cost(spec_of(self.units, [CAP if d > 0 else 0.0 for d in z], schemes)))
        raise GoalError(
            f"a {reduction:g}x {self.objective} reduction cannot be met: with every layer at the largest rate "
            f"({CAP}) this model reaches {best:.1f}x; ask for less (--{self.objective}-x N)"
        )


def kept_structures(plan: Plan) -> list[tuple[int, int]]:
    """(groups kept, columns kept) of every layer of a plan; groups only where the layer decides them."""
    return [(0 if e.coupled_to else e.groups_kept, e.columns_kept) for e in plan.layers]


def _one_structure_apart(a: Plan, b: Plan) -> bool:
    diff = sum(abs(x[0] - y[0]) + abs(x[1] - y[1]) for x, y in zip(kept_structures(a), kept_structures(b), strict=True))
    return diff <= 1
