"""Latency tables: the grid, interpolation (exact on grid cells), the tile-aware filter axis, aligned kept counts
in the rescaling, JSON round trip, and the errors for models the kernel does not run."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.cost.latency_model import (
    SWITCH_DENSITY,
    ConvGeometry,
    LatencyModel,
    LayerTable,
    cells,
    conv_geometries,
    grid,
    tile_end,
)
from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import trace
from ac_toolchain.native import MR
from ac_toolchain.prune.schemes import plan_graph
from ac_toolchain.search.space import Space, spec_of
from ac_toolchain.zoo import build_model
from tests.nets import Depthwise, cbr

GEO = ConvGeometry(c=32, h=8, w=8, f=48, kh=3, kw=3, ph=1, pw=1)


def _table(geo: ConvGeometry, cost: object) -> LayerTable:
    return LayerTable(geo, {cell: cost(*cell) for cell in cells(geo)})  # type: ignore[operator]


def tiled(f: float, c: float, k: float) -> float:
    """A kernel whose time steps with whole blocks of MR filters and grows with rows (and a bit with channels)."""
    return math.ceil(f / MR) * MR * k * 10.0 + 7.0 * c


def test_grid_covers_tile_ends_their_first_filters_and_both_sides_of_the_density_switch() -> None:
    g = grid(GEO)
    assert 48 in g["filters"] and all(tile_end(f, 48) in g["filters"] for f in g["filters"])
    assert {1, 8} <= set(g["filters"]) and {41, 17} <= set(g["filters"])  # starts of the tiles ending at 48, 24
    assert g["channels"] == [8, 16, 24, 32]
    for c in g["channels"]:
        rows, full = g["rows"][str(c)], c * 9
        switch = math.ceil(SWITCH_DENSITY * full)
        assert {switch - 1, switch, full} <= set(rows) and rows == sorted(rows) and max(rows) == full


def test_interpolation_is_exact_on_every_grid_cell() -> None:
    rng = random.Random(0)
    values = {cell: rng.uniform(1.0, 1e6) for cell in cells(GEO)}
    table = LayerTable(GEO, values)
    assert all(table.predict(*cell) == pytest.approx(v, rel=1e-12) for cell, v in values.items())


def test_filter_axis_follows_the_measured_tiles_between_grid_nodes() -> None:
    table = _table(GEO, tiled)
    for f in range(1, 49):  # f = 30 is not a node: its tile (25..32) costs what 32 filters do
        assert table.predict(f, 32, 288) == pytest.approx(tiled(f, 32, 288), rel=1e-9), f


def test_linear_costs_interpolate_exactly_between_nodes() -> None:
    def linear(f: float, c: float, k: float) -> float:
        return 3.0 * f * k + 5.0 * c + 11.0

    table = _table(GEO, linear)
    for f, c, k in [(30, 32, 200), (13, 20, 100), (45, 12, 50)]:
        density = k / (c * 9)  # the row axis interpolates in density, the channel axis in c: both linear here
        lo, hi = 16, 24
        expect = sum(w * linear(f, cc, density * cc * 9) for cc, w in ((lo, (hi - c) / 8), (hi, (c - lo) / 8)))
        got = table.predict(f, c, k)
        assert got == pytest.approx(expect if lo <= c <= hi else linear(f, c, k), rel=1e-9)


def test_aligned_fills_a_tile_only_where_the_table_says_it_is_free() -> None:
    stepped = _table(GEO, tiled)
    assert [stepped.aligned(f) for f in (1, 9, 30, 33, 48)] == [8, 16, 32, 40, 48]
    smooth = _table(GEO, lambda f, c, k: f * k * 10.0)
    assert [smooth.aligned(f) for f in (1, 9, 30, 33, 48)] == [1, 9, 30, 33, 48]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(3, 40), cbr(40, 40), cbr(40, 24, stride=2))
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def _tiny_space(cost: object, objective: str = "latency") -> tuple[Space, nn.Module]:
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(1, 3, 12, 12)
    tables = {name: _table(geo, cost) for name, geo in conv_geometries(model, x).items()}
    latency = LatencyModel("fake", "instructions", "instructions", {}, tables, rest=100.0, per_mac=2.0, total=0.0)
    return Space(trace(model, x), objective, called_modules(model, x), latency=latency), model


@pytest.mark.parametrize("scheme", ["filter", "filter+column"])
def test_rescale_keeps_tile_ends_where_part_filled_tiles_cost_full_ones(scheme: str) -> None:
    space, _ = _tiny_space(tiled)
    schemes = [scheme] * len(space.units)
    rates = space.rescale([0.3, 0.6, 0.5, 0.2], schemes, 2.5)
    plan = space.plan(spec_of(space.units, rates, schemes))
    kept = {e.name: e.groups_kept for e in plan.layers if not e.coupled_to and space.graph.filter_groups(e.name)}
    total = {n: len(space.graph.filter_groups(n)) for n in kept}
    assert all(k % MR == 0 or k == total[n] for n, k in kept.items()), kept
    assert space.ratio(space.cost(spec_of(space.units, rates, schemes))) >= 2.5


def test_rescale_leaves_counts_alone_where_every_filter_costs_time() -> None:
    space, _ = _tiny_space(lambda f, c, k: f * k * 10.0 + 7.0 * c)
    schemes = ["filter"] * len(space.units)
    rates = space.rescale([0.3, 0.6, 0.5, 0.2], schemes, 2.5)
    plan = plan_graph(space.graph, dict(zip([u.name for u in space.units], rates, strict=True)), "filter")
    kept = [e.groups_kept for e in plan.layers if not e.coupled_to and space.graph.filter_groups(e.name)]
    assert any(k % MR for k in kept), kept  # nothing forced to the tiles


def test_latency_cost_reads_tables_rest_and_per_mac() -> None:
    space, _ = _tiny_space(tiled)
    dense = space.dense.latency
    convs = sum(t.dense() for t in space.latency.layers.values())  # type: ignore[union-attr]
    assert dense == pytest.approx(100.0 + 2.0 * (24 * 10) + convs)


def test_model_round_trips_through_json() -> None:
    space, _ = _tiny_space(tiled)
    assert space.latency is not None
    again = LatencyModel.from_json(space.latency.to_json())
    assert again.to_json() == space.latency.to_json()
    assert again.layers["body.1.0"].predict(13, 30, 100) == space.latency.layers["body.1.0"].predict(13, 30, 100)


def test_the_latency_objective_needs_tables() -> None:
    model, x = Tiny().eval(), torch.randn(1, 3, 12, 12)
    with pytest.raises(ConfigError, match="latency objective needs the device's latency tables"):
        Space(trace(model, x), "latency", called_modules(model, x))


def test_convs_the_kernel_does_not_run_are_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs every conv on the compact kernel; .* grouped conv"):
        conv_geometries(nn.Sequential(cbr(3, 8), Depthwise(8)), torch.randn(1, 3, 8, 8))
    model = build_model("mobilenetv2", num_classes=10, in_channels=3, input_size=(32, 32))
    with pytest.raises(ConfigError, match="use --params-x or --flops-x for this model"):
        conv_geometries(model, torch.randn(1, 3, 32, 32))


def test_geometries_record_each_convs_input() -> None:
    model = build_model("resnet18", num_classes=10, in_channels=3, input_size=(32, 32))
    geos = conv_geometries(model, torch.randn(1, 3, 32, 32))
    assert geos["conv1"] == ConvGeometry(3, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1)
    assert geos["layer2.0.conv1"] == ConvGeometry(64, 32, 32, 128, 3, 3, 2, 2, 1, 1, 1, 1)
    assert geos["layer2.0.downsample.0"].kh == 1 and geos["layer2.0.downsample.0"].c == 64
