"""The annealer: Metropolis acceptance, the experience rules, seeded determinism and resumable state."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pytest
import torch

from ac_toolchain.config import SearchConfig
from ac_toolchain.cost.analytic import Cost
from ac_toolchain.graph import trace
from ac_toolchain.prune.spec import Spec, parse_spec, spec_to_json
from ac_toolchain.search.anneal import COLLAPSE, Annealer, AnnealSettings, Proposal, order_by_size
from ac_toolchain.search.space import CAP, Space, Unit, depths, spec_of
from ac_toolchain.zoo import build_model


@pytest.fixture(scope="module")
def lenet() -> Space:
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28)).eval()
    return Space(trace(model, torch.randn(1, 1, 28, 28)), "params")


@pytest.fixture(scope="module")
def resnet() -> Space:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, in_channels=1, input_size=(28, 28), stem="cifar",
                        width_mult=0.125).eval()  # fmt: skip
    return Space(trace(model, torch.randn(1, 1, 28, 28)), "params")


class FakeSpace:
    """What the annealer reads of a space, without planning: rescale returns the rates as they are."""

    def __init__(self) -> None:
        self.units = [Unit("a", ("a",), 10, "first"), Unit("b", ("b",), 300, "body"), Unit("c", ("c",), 200, "body"),
                      Unit("d", ("d",), 5, "classifier")]  # fmt: skip

    def rescale(self, rates: list[float], schemes: list[str], reduction: float) -> list[float]:
        return [min(r, CAP) for r in rates]

    def cost(self, spec: Spec) -> Cost:
        return Cost(1, 1)

    def ratio(self, cost: Cost) -> float:
        return 1.0


def _gentle(spec: Spec) -> float:
    """A deterministic proxy that never collapses (spread well under ``COLLAPSE`` points)."""
    s = sum((i + 1) * v.rate for i, v in enumerate(spec.values()))
    return 0.6 + 0.03 * math.sin(7.0 * s)


def _run(space: Space, score: Callable[[Spec], float], seed: int, steps: int, reduction: float = 5.0) -> list:
    schemes = ["filter+column"] * len(space.units)
    a = Annealer(space, score, reduction, AnnealSettings(seed=seed, proposals=steps), schemes)
    out = []
    while not a.finished():
        out.append(a.step())
    return out


# ---- acceptance
def _acceptance(energy: str, temperature: float, delta: float, n: int, seed: int = 3) -> tuple[int, Annealer]:
    """Accepted proposals out of ``n``, each ``delta`` (accuracy fraction) away from the current one."""
    holder: dict[str, Annealer] = {}

    def score(spec: Spec) -> float:
        a = holder.get("a")
        return 0.9 if a is None or a.current is None else a.current.accuracy + delta

    space = FakeSpace()
    a = Annealer(space, score, 2.0, AnnealSettings(seed=seed, energy=energy, scheme_moves=False),  # type: ignore[arg-type]
                 ["filter"] * 4)  # fmt: skip
    holder["a"] = a
    a.step()  # the start
    accepted = 0
    for _ in range(n):
        a.temperature = temperature  # a fixed temperature: every step draws against the same probability
        accepted += a.step().accepted
    return accepted, a


def _within_band(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


class _StubDraw:
    """The annealer's generator with its acceptance draw fixed: ``random()`` returns ``u`` (and counts the calls);
    the perturbation's ``uniform`` (and ``integers``) still come from a real generator."""

    def __init__(self, u: float) -> None:
        self.u, self.calls = u, 0
        self._real = np.random.default_rng(0)

    def random(self) -> float:
        self.calls += 1
        return self.u

    def uniform(self, low: float, high: float) -> float:
        return float(self._real.uniform(low, high))

    def integers(self, n: int) -> int:
        return int(self._real.integers(n))


def _decide(energy: str, temperature: float, current: float, proposed: float, u: float) -> tuple[bool, int]:
    """One proposal scored ``proposed`` against the start scored ``current``, at ``temperature``, with the
    acceptance draw fixed to ``u``: whether it was accepted, and how many draws the decision took."""
    scores = iter([current, proposed])
    settings = AnnealSettings(seed=0, energy=energy, scheme_moves=False)  # no scheme move: random() is the accept draw
    a = Annealer(FakeSpace(), lambda spec: next(scores), 2.0, settings, ["filter"] * 4)  # type: ignore[arg-type]
    a.step()  # the start
    draw = _StubDraw(u)
    a.rng = draw  # type: ignore[assignment]
    a.temperature = temperature
    p = a.step()
    assert (p.temperature, p.point.accuracy) == (temperature, proposed)
    assert a.current is not None and a.current.accuracy == (proposed if p.accepted else current)
    return p.accepted, draw.calls


# dyadic accuracies, so that dE in points (100 x accuracy) and in fractions is exact: 0.75 -> 0.75 - 2^-k
WORSE = [0.75 - 2.0**-k for k in (5, 6, 7)]  # dE = -3.125, -1.5625, -0.78125 points


@pytest.mark.parametrize("temperature", [0.5, 2.0, 5.0, 13.0])
@pytest.mark.parametrize("proposed", WORSE)
@pytest.mark.parametrize("energy", ["points", "fraction"])
def test_a_worse_proposal_is_accepted_exactly_when_the_draw_is_below_exp_de_over_t(
    energy: str, proposed: float, temperature: float
) -> None:
    scale = 100.0 if energy == "points" else 1.0
    d_e = scale * proposed - scale * 0.75
    assert d_e == scale * (proposed - 0.75) < 0  # exact
    threshold = math.exp(d_e / temperature)
    below, above = threshold * (1 - 1e-9), threshold * (1 + 1e-9)  # a 10 % error in T moves it by far more
    assert _decide(energy, temperature, 0.75, proposed, below) == (True, 1)
    assert _decide(energy, temperature, 0.75, proposed, above) == (False, 1)


@pytest.mark.parametrize("temperature", [1e-3, 0.5, 13.0])
@pytest.mark.parametrize("proposed", [0.75, 0.75 + 2.0**-6, 0.99])
@pytest.mark.parametrize("energy", ["points", "fraction"])
def test_a_better_or_equal_proposal_is_accepted_whatever_the_draw(
    energy: str, proposed: float, temperature: float
) -> None:
    accepted, _ = _decide(energy, temperature, 0.75, proposed, 1.0 - 2.0**-53)  # the largest random() can give
    assert accepted


def test_worse_proposals_are_accepted_at_the_rate_exp_de_over_t() -> None:
    """The real generator: the acceptance rate at dE / T = -1 (where a change of T moves it most) lies within half
    the gap to the rate of a temperature 10 % off either way, and that half gap is over 4 sigma at this n."""
    n, temperature = 10_000, 2.0
    k, a = _acceptance("points", temperature, -0.02, n)  # 2 points worse every time
    p = math.exp(-2.0 / temperature)
    band = 0.5 * min(math.exp(-2.0 / (temperature / 0.9)) - p, p - math.exp(-2.0 / (0.9 * temperature)))
    assert band >= 4 * math.sqrt(p * (1 - p) / n)  # the design: a right T stays in, a T 10 % off falls out
    assert abs(k / n - p) <= band, (k / n, p, band)
    assert a.strikes == [0, 0, 0, 0]  # 2 points is no collapse
    assert a.best is not None and a.best.accuracy == 0.9  # nothing better came


def test_fraction_energy_accepts_almost_everything() -> None:
    """NNI's 0-1 energy: 2 points are dE = 0.02, so exp(-0.02 / T) ~ 1 and the search is a random walk."""
    n, temperature = 400, 2.0
    k, _ = _acceptance("fraction", temperature, -0.02, n)
    p = math.exp(-0.02 / temperature)
    assert _within_band(k, n, p), (k, n * p)
    assert k >= 0.97 * n
    k_points, _ = _acceptance("points", temperature, -0.02, n)
    assert k_points < 0.5 * n < k


@pytest.mark.parametrize("delta", [0.01, 0.0])
def test_better_or_equal_proposals_are_always_accepted(delta: float) -> None:
    k, a = _acceptance("points", 1e-3, delta, 100)
    assert k == 100
    assert a.current is not None and a.current.accuracy == pytest.approx(0.9 + 100 * delta)
    if delta:
        assert a.best is a.current


def test_temperature_cools_geometrically_and_stops_at_t_stop() -> None:
    s = AnnealSettings(t0=1.0, t_stop=0.5, cooling=0.8, seed=0, scheme_moves=False)
    a = Annealer(FakeSpace(), lambda spec: 0.5, 2.0, s, ["filter"] * 4)  # type: ignore[arg-type]
    temps = []
    while not a.finished():
        temps.append(a.step().temperature)
    assert temps == pytest.approx([1.0, 1.0, 0.8, 0.64, 0.512])  # the start, then one proposal per step
    assert a.temperature < 0.5 and a.index == 4


def test_collapse_strikes_the_unit_that_rose_most() -> None:
    calls = [0]

    def score(spec: Spec) -> float:
        calls[0] += 1
        return 0.9 if calls[0] == 1 else 0.9 - (COLLAPSE + 1) / 100

    a = Annealer(FakeSpace(), score, 2.0, AnnealSettings(seed=1, scheme_moves=False), ["filter"] * 4)  # type: ignore[arg-type]
    a.step()
    before = depths(a.current.rates)  # type: ignore[union-attr]
    p = a.step()
    rise = [(x - y) / y for x, y in zip(depths(p.point.rates), before, strict=True)]
    assert sum(a.strikes) == 1 and a.strikes.index(1) == rise.index(max(rise))


# ---- experience rules
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_order_by_size(lenet: Space, resnet: Space, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for space in (lenet, resnet):
        units = space.units
        z = [0.0, *(torch.rand(len(units) - 1, generator=gen) * 8).tolist()]  # some beyond the cap
        out = order_by_size(space, z)
        cap = depths([CAP])[0]
        assert sorted(out) == pytest.approx(sorted(min(d, cap) for d in z))
        body = [i for i, u in enumerate(units) if u.role == "body"]
        (first,) = [i for i, u in enumerate(units) if u.role == "first"]
        (cls,) = [i for i, u in enumerate(units) if u.role == "classifier"]
        largest = max(body, key=lambda i: units[i].size)
        assert out[largest] == max(out)
        for i in body:
            for j in body:
                if units[i].size > units[j].size:
                    assert out[i] >= out[j]
            assert out[first] <= out[i] and out[cls] <= out[i]
        assert out[cls] == min(out) and sorted(out)[1] == out[first]


def _check_rules(space: Space, rates: list[float]) -> None:
    units = space.units
    body = [i for i, u in enumerate(units) if u.role == "body"]
    for i in body:
        for j in body:
            if units[i].size > units[j].size:
                assert rates[i] >= rates[j], (units[i].name, units[j].name, rates)
    for i, u in enumerate(units):
        if u.role != "body":
            assert all(rates[i] <= rates[j] for j in body), (u.name, rates)


def test_proposals_follow_the_experience_rules(lenet: Space) -> None:
    proposals = _run(lenet, _gentle, seed=4, steps=12)
    assert len(proposals) == 13
    assert any(not p.accepted for p in proposals) or any(p.point.schemes != proposals[0].point.schemes
                                                         for p in proposals)  # fmt: skip
    for p in proposals[1:]:  # the start is uniform
        _check_rules(lenet, p.point.rates)
        assert p.point.ratio >= 5.0
    assert len({tuple(p.point.rates) for p in proposals}) > 5  # the rates do move


# ---- determinism and state
def test_same_seed_same_search_different_seed_differs(lenet: Space) -> None:
    a = _run(lenet, _gentle, seed=7, steps=3)
    b = _run(lenet, _gentle, seed=7, steps=3)
    c = _run(lenet, _gentle, seed=8, steps=2)
    assert a == b
    assert [p.point.rates for p in a[1:3]] != [p.point.rates for p in c[1:]]
    assert a[0] == c[0]  # the start is the uniform spec whatever the seed


def test_state_round_trip_continues_exactly(lenet: Space) -> None:
    settings = AnnealSettings(seed=11, proposals=7)
    schemes = ["filter+column"] * len(lenet.units)
    whole = Annealer(lenet, _gentle, 5.0, settings, schemes)
    straight: list[Proposal] = []
    while not whole.finished():
        straight.append(whole.step())
    first = Annealer(lenet, _gentle, 5.0, settings, schemes)
    resumed = [first.step() for _ in range(4)]
    saved = json.loads(json.dumps(first.state()))
    second = Annealer(lenet, _gentle, 5.0, settings, schemes)
    second.load_state(saved)
    while not second.finished():
        resumed.append(second.step())
    assert resumed == straight
    assert asdict(second.best) == asdict(whole.best)  # type: ignore[arg-type]
    assert second.state()["rng"] == whole.state()["rng"] and second.temperature == whole.temperature


def test_the_recorded_spec_is_the_costed_one(lenet: Space) -> None:
    """What the search writes (``annealer.spec(point)`` through ``spec_to_json``) has the cost of the point."""
    for p in _run(lenet, _gentle, seed=1, steps=8):
        written = parse_spec(json.loads(spec_to_json(spec_of(lenet.units, p.point.rates, p.point.schemes))), "x")
        cost = lenet.cost(written)
        assert (cost.params, cost.flops) == (p.point.params, p.point.flops)
        assert lenet.ratio(cost) >= 5.0


def test_settings_are_the_search_sections_knobs_by_name() -> None:
    search = SearchConfig(t0=7.0, t_stop=0.2, cooling=0.8, proposals=3, time_budget=5.0, scheme_moves=False,
                          energy="fraction")  # fmt: skip
    assert AnnealSettings.from_config(search, seed=9) == AnnealSettings(
        t0=7.0, t_stop=0.2, cooling=0.8, proposals=3, time_budget=5.0, scheme_moves=False, energy="fraction", seed=9
    )
