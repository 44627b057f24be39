"""Simulated annealing over per-unit rates and schemes, guided by experience (docs/algorithm.md, "Search").

One proposal per temperature step: perturb the current rates in keep space (magnitude ``0.35 * T / T0`` of
each unit's pruning depth), apply the experience rules, maybe change one unit's scheme, rescale so the
round's goal holds (:meth:`Space.rescale`), score with the proxy. A better proposal is always accepted, a
worse one with probability ``exp(dE / T)``, ``dE`` in accuracy points (``energy = "fraction"`` uses NNI's
0-1 fraction, for the ablation). ``T <- cooling * T`` until ``t_stop``, a proposal count or a time budget.

Experience rules (applied to every proposal):

- sorted depths go to the body units in order of size (params, or MACs for a FLOPs objective): larger
  layers are pruned more;
- the first layer and the classifier take the smallest depths (pruned least);
- a unit whose raise made the proxy accuracy collapse (more than ``COLLAPSE`` points below the current one)
  gets a strike; each strike scales its depth by ``STEER`` from then on (steered down).

Everything random comes from one seeded numpy generator whose state is in :meth:`Annealer.state`, so the same
seed gives the same search, and a search resumed from its saved state continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ac_toolchain.config import SearchConfig
from ac_toolchain.prune.spec import Spec
from ac_toolchain.scheme_registry import SEARCH_SCHEMES
from ac_toolchain.search.space import CAP, Space, depths, spec_of

COLLAPSE = 10.0  # accuracy points below the current proposal that count as a collapse
STEER = 0.8  # depth factor per strike
SCHEME_MOVE = 0.3  # probability that a proposal also changes one unit's scheme
MAGNITUDE = 0.35  # perturbation of each depth at T0 (relative), as in NNI


@dataclass(frozen=True)
class AnnealSettings:
    t0: float = 10.0
    t_stop: float = 0.1
    cooling: float = 0.9
    proposals: int = 0  # at most this many after the start (0: until t_stop)
    time_budget: float = 0.0  # seconds (0: none)
    scheme_moves: bool = True
    energy: str = "points"  # or "fraction"
    seed: int = 0

    @classmethod
    def from_config(cls, search: SearchConfig, seed: int) -> AnnealSettings:
        """The ``[search]`` section's annealing knobs, by name (a renamed config field is a type error here)."""
        return cls(t0=search.t0, t_stop=search.t_stop, cooling=search.cooling, proposals=search.proposals,
                   time_budget=search.time_budget, scheme_moves=search.scheme_moves, energy=search.energy,
                   seed=seed)  # fmt: skip


@dataclass
class Point:
    """A scored spec: per-unit rates and schemes, proxy accuracy in [0, 1], cost and reduction."""

    rates: list[float]
    schemes: list[str]
    accuracy: float
    params: int
    flops: int
    ratio: float


@dataclass
class Proposal:
    """One line of search.jsonl."""

    index: int
    temperature: float
    point: Point
    accepted: bool
    best_accuracy: float
    spec: dict[str, dict[str, Any]] = field(default_factory=dict)


class Annealer:
    """Anneal over ``space`` toward ``reduction`` with ``score(spec) -> accuracy in [0, 1]``."""

    def __init__(self, space: Space, score: Callable[[Spec], float], reduction: float, settings: AnnealSettings,
                 start_schemes: list[str]) -> None:  # fmt: skip
        self.space, self.score, self.reduction, self.s = space, score, reduction, settings
        self.rng = np.random.default_rng(settings.seed)
        self.start_schemes = start_schemes
        self.index, self.temperature, self.elapsed = 0, settings.t0, 0.0
        self.strikes = [0] * len(space.units)
        self.current: Point | None = None
        self.best: Point | None = None

    # ---- state (JSON-able)
    def state(self) -> dict[str, Any]:
        return {"index": self.index, "temperature": self.temperature, "elapsed": self.elapsed,
                "strikes": self.strikes, "rng": self.rng.bit_generator.state,
                "current": asdict(self.current) if self.current else None,
                "best": asdict(self.best) if self.best else None}  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        self.index, self.temperature, self.elapsed = state["index"], state["temperature"], state["elapsed"]
        self.strikes = list(state["strikes"])
        self.rng.bit_generator.state = state["rng"]
        self.current = Point(**state["current"]) if state["current"] else None
        self.best = Point(**state["best"]) if state["best"] else None

    # ---- the search
    def finished(self) -> bool:
        s = self.s
        return self.current is not None and (
            self.temperature < s.t_stop
            or (s.proposals > 0 and self.index >= s.proposals)
            or (s.time_budget > 0 and self.elapsed >= s.time_budget)
        )

    def step(self) -> Proposal:
        """Score the start (the uniform spec at the goal), or one more proposal; returns what happened."""
        start = time.perf_counter()
        if self.current is None:
            n = len(self.space.units)
            point = self._point(self.space.rescale([0.5] * n, self.start_schemes, self.reduction), self.start_schemes)
            self.current = self.best = point
            proposal = Proposal(0, self.temperature, point, True, point.accuracy)
        else:
            proposal = self._propose()
        spec = self.spec(proposal.point)
        proposal.spec = {k: {"rate": round(v.rate, 6), "scheme": v.scheme} for k, v in spec.items()}
        self.elapsed += time.perf_counter() - start
        return proposal

    def _propose(self) -> Proposal:
        assert self.current is not None and self.best is not None
        self.index += 1
        t = self.temperature
        cur = self.current
        schemes = self._move_scheme(cur.schemes)
        z = self._perturb(depths(cur.rates), t)
        point = self._point(self.space.rescale([-math.expm1(-d) for d in z], schemes, self.reduction), schemes)
        d_e = self._energy(point.accuracy) - self._energy(cur.accuracy)
        accepted = d_e >= 0 or float(self.rng.random()) < math.exp(d_e / t)
        if 100 * (cur.accuracy - point.accuracy) > COLLAPSE:
            self._strike(depths(cur.rates), depths(point.rates))
        if accepted:
            self.current = point
        if point.accuracy > self.best.accuracy:
            self.best = point
        self.temperature = t * self.s.cooling
        return Proposal(self.index, t, point, accepted, self.best.accuracy)

    def _energy(self, accuracy: float) -> float:
        return 100.0 * accuracy if self.s.energy == "points" else accuracy

    def _perturb(self, z: list[float], t: float) -> list[float]:
        """Relative noise on each depth, then the experience rules (size order, first/classifier least, strikes)."""
        m = MAGNITUDE * t / self.s.t0
        noisy = [d * (1.0 + float(self.rng.uniform(-m, m))) for d in z]
        return [d * STEER**k for d, k in zip(order_by_size(self.space, noisy), self.strikes, strict=True)]

    def _move_scheme(self, schemes: list[str]) -> list[str]:
        schemes = list(schemes)
        if not self.s.scheme_moves or float(self.rng.random()) >= SCHEME_MOVE:
            return schemes
        movable = [i for i, u in enumerate(self.space.units) if u.role != "classifier"]
        if movable:
            i = movable[int(self.rng.integers(len(movable)))]
            others = [s for s in SEARCH_SCHEMES if s != schemes[i]]
            schemes[i] = others[int(self.rng.integers(len(others)))]
        return schemes

    def _strike(self, before: list[float], after: list[float]) -> None:
        """The unit whose depth rose most (relative) takes the blame for a collapse."""
        rise = [(a - b) / max(b, 1e-9) for a, b in zip(after, before, strict=True)]
        i = int(np.argmax(rise))
        if rise[i] > 0:
            self.strikes[i] += 1

    def _point(self, rates: list[float], schemes: list[str]) -> Point:
        spec = spec_of(self.space.units, rates, schemes)
        cost = self.space.cost(spec)
        return Point([round(r, 9) for r in rates], list(schemes), self.score(spec), cost.params, cost.flops,
                     round(self.space.ratio(cost), 4))  # fmt: skip

    def spec(self, point: Point) -> Spec:
        return spec_of(self.space.units, point.rates, point.schemes)


def order_by_size(space: Space, z: list[float]) -> list[float]:
    """Sorted depths assigned to units by size: the largest body unit gets the largest depth; the first layer
    and the classifier get the smallest ones (the classifier the very smallest)."""
    units = space.units
    rank = {"body": 0, "first": 1, "classifier": 2}
    order = sorted(range(len(units)), key=lambda i: (rank[units[i].role], -units[i].size, i))
    out = [0.0] * len(z)
    for i, d in zip(order, sorted((min(d, depths([CAP])[0]) for d in z), reverse=True), strict=True):
        out[i] = d
    return out
