"""The search space: decision units, rescaling to a reduction goal, and earlier rounds' masks (``base``).

Costs are checked independently of :meth:`Space.cost`: with :func:`masks_cost` on the masks the space
produces, which reads only zero patterns, and, with earlier rounds' masks, by counting the compacted model.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ac_toolchain.compact import CompactConv2d, GatherLinear, compact
from ac_toolchain.cost.analytic import called_modules, masks_cost
from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import Graph, trace, weight_of
from ac_toolchain.prune.schemes import masks_of, plan_graph
from ac_toolchain.search.space import (
    CAP,
    GoalError,
    Space,
    combine,
    depths,
    kept_structures,
    rates_at,
    spec_of,
    units_of,
)
from ac_toolchain.zoo import build_model

X = torch.randn(1, 1, 28, 28)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet18":
        model = build_model("resnet18", num_classes=10, in_channels=1, input_size=(28, 28), stem="cifar",
                            width_mult=0.125)  # fmt: skip
    else:
        model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28))
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, Graph]:
    model = _model("resnet18")
    return model, trace(model, X)


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, Graph]:
    model = _model("lenet5")
    return model, trace(model, X)


def _graph(name: str, resnet: tuple[nn.Module, Graph], lenet: tuple[nn.Module, Graph]) -> tuple[nn.Module, Graph]:
    return resnet if name == "resnet18" else lenet


# ---- units
def _unit_of(units: list, layer: str):
    (unit,) = [u for u in units if layer in u.members]
    return unit


def test_resnet_residual_coupled_layers_share_one_unit(resnet: tuple[nn.Module, Graph]) -> None:
    _, graph = resnet
    units = units_of(graph, "params")
    members = [m for u in units for m in u.members]
    assert sorted(members) == sorted(graph.layers)  # every layer in exactly one unit
    # the stem's output is the identity path of layer1: both second convs of layer1 take its filters
    stem = _unit_of(units, "conv1")
    assert stem.name == "conv1" and {"layer1.0.conv2", "layer1.1.conv2"} <= set(stem.members)
    # a downsampling stage: shortcut conv and both second convs add into one tensor
    for stage in ("layer2", "layer3", "layer4"):
        unit = _unit_of(units, f"{stage}.0.conv2")
        assert set(unit.members) == {f"{stage}.0.downsample.0", f"{stage}.0.conv2", f"{stage}.1.conv2"}
    names = {u.name for u in units}
    for coupled in ("layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer4.1.conv2"):
        assert coupled not in names  # not a dimension of its own
    for own in ("layer1.0.conv1", "layer2.1.conv1", "layer4.0.conv1"):
        assert _unit_of(units, own).members == (own,)
    assert len(units) == 13


@pytest.mark.parametrize("name", ["resnet18", "lenet5"])
def test_roles(name: str, resnet: tuple[nn.Module, Graph], lenet: tuple[nn.Module, Graph]) -> None:
    _, graph = _graph(name, resnet, lenet)
    units = units_of(graph, "params")
    classifier = "fc" if name == "resnet18" else "fc3"
    assert units[0].name == graph.layers[0] and units[0].role == "first"
    (cls,) = [u for u in units if u.role == "classifier"]
    assert cls.name == classifier and cls.members == (classifier,)
    assert [u.role for u in units[1:] if u.name != classifier] == ["body"] * (len(units) - 2)


@pytest.mark.parametrize("name", ["resnet18", "lenet5"])
@pytest.mark.parametrize("objective", ["params", "flops"])
def test_unit_sizes(name: str, objective: str, resnet: tuple[nn.Module, Graph], lenet: tuple[nn.Module, Graph]):
    model, graph = _graph(name, resnet, lenet)
    modules = dict(model.named_modules())
    for unit in units_of(graph, objective):
        want = 0
        for m in unit.members:
            numel = modules[m].weight.numel()
            shape = graph.shapes[m]
            want += numel if objective == "params" or len(shape) != 4 else numel * shape[2] * shape[3]
        assert unit.size == want, unit.name


def test_lenet_flops_sizes_by_hand(lenet: tuple[nn.Module, Graph]) -> None:
    _, graph = lenet
    sizes = {u.name: u.size for u in units_of(graph, "flops")}
    # conv1 6x1x5x5 on 28x28 (padding 2), conv2 16x6x5x5 on 10x10, then 400->120->84->10
    assert sizes == {"conv1": 150 * 784, "conv2": 2400 * 100, "fc1": 48000, "fc2": 10080, "fc3": 840}


def test_spec_of_covers_members_and_depths_round_trip(resnet: tuple[nn.Module, Graph]) -> None:
    _, graph = resnet
    units = units_of(graph, "params")
    rates = [0.05 * i for i in range(len(units))]
    schemes = ["filter", "column", "filter+column"] * 5
    spec = spec_of(units, rates, schemes[: len(units)])
    assert set(spec) == set(graph.layers)
    for u, r, s in zip(units, rates, schemes, strict=False):
        assert all(spec[m].rate == r and spec[m].scheme == s for m in u.members)
    with pytest.raises(ValueError):
        spec_of(units, rates[:-1], schemes[: len(units)])
    z = depths([0.0, 0.5, 0.9, 0.999])
    assert z[0] == 0.0 and z[1] == pytest.approx(math.log(2)) and z[3] == pytest.approx(-math.log(1 - CAP))
    assert rates_at(z, 1.0) == pytest.approx([0.0, 0.5, 0.9, CAP])
    assert rates_at(z, 100.0) == [0.0, CAP, CAP, CAP]  # never 1


# ---- rescale
def _positions_cost(graph: Graph, gid: int, objective: str) -> int:
    """Everything one dependency group takes with it: filter rows (+ bias), input columns, BN entries."""
    total = 0
    for p in graph.groups[gid].positions:
        if p.kind == "bn":
            total += 2 if objective == "params" else 0
            continue
        mod = graph.module(p.module)
        w = weight_of(mod)
        part = (w[:, p.index] if p.kind == "in" else w[p.index]).numel()
        shape = graph.shapes[p.module]
        spatial = shape[2] * shape[3] if len(shape) == 4 else 1
        bias = 1 if p.kind != "in" and getattr(mod, "bias", None) is not None else 0
        total += part + bias if objective == "params" else part * spatial
    return total


def _largest_structure(graph: Graph, objective: str) -> int:
    """An upper bound on what one structure more (or less) changes: the costliest group plus the costliest
    single column (a column can be the last reader of a group, which then goes with it)."""
    group = max(_positions_cost(graph, g, objective) for g in range(len(graph.groups)) if not graph.groups[g].frozen)
    column = 0
    for layer in graph.layers:
        shape = graph.shapes[layer]
        spatial = shape[2] * shape[3] if len(shape) == 4 else 1
        column = max(column, weight_of(graph.module(layer)).shape[0] * (1 if objective == "params" else spatial))
    return group + column


def _value(cost, objective: str) -> int:
    return cost.params if objective == "params" else cost.flops


RESCALE_CASES = [  # (model, objective, reduction, scheme)
    ("resnet18", "params", 2.0, "filter+column"),
    ("resnet18", "flops", 10.0, "filter"),
    ("resnet18", "params", 50.0, "column"),
    ("lenet5", "params", 30.0, "filter+column"),  # needs rates above 0.8
    ("lenet5", "params", 100.0, "column"),
    ("lenet5", "flops", 40.0, "column"),
]


@pytest.mark.parametrize(("name", "objective", "reduction", "scheme"), RESCALE_CASES)
def test_rescale_meets_target_within_one_structure(
    name: str, objective: str, reduction: float, scheme: str,
    resnet: tuple[nn.Module, Graph], lenet: tuple[nn.Module, Graph],
) -> None:  # fmt: skip
    model, graph = _graph(name, resnet, lenet)
    used = called_modules(model, X)
    space = Space(graph, objective, used)
    n = len(space.units)
    rates = [0.2 + 0.6 * ((7 * i) % n) / n for i in range(n)]  # distinct, not sorted
    out = space.rescale(rates, [scheme] * n, reduction)
    assert len(out) == n and all(0.0 < r <= CAP < 1.0 for r in out)
    for i in range(n):  # one factor on every depth: the order of the rates holds
        for j in range(n):
            if rates[i] < rates[j]:
                assert out[i] <= out[j]
    spec = spec_of(space.units, out, [scheme] * n)
    cost = masks_cost(graph, space.masks(spec), used)  # independent of Space.cost
    assert cost == space.cost(spec)
    dense = _value(masks_cost(graph, {}, used), objective)
    assert dense == _value(space.dense, objective)
    got = _value(cost, objective)
    assert dense / got >= reduction
    goal = dense / reduction
    assert goal - got < _largest_structure(graph, objective)  # not more than one structure past the target
    if reduction >= 30 and name == "lenet5":
        assert max(out) > 0.8


def test_rescale_of_zero_rates_is_uniform(lenet: tuple[nn.Module, Graph]) -> None:
    _, graph = lenet
    space = Space(graph, "params")
    n = len(space.units)
    out = space.rescale([0.0] * n, ["filter+column"] * n, 4.0)
    assert len(set(out)) == 1 and 0 < out[0] < CAP
    assert space.ratio(space.cost(spec_of(space.units, out, ["filter+column"] * n))) >= 4.0


def test_rescale_scales_depths_by_one_factor(lenet: tuple[nn.Module, Graph]) -> None:
    _, graph = lenet
    space = Space(graph, "params")
    rates = [0.1, 0.3, 0.6, 0.5, 0.2]
    out = space.rescale(rates, ["filter"] * 5, 8.0)
    factors = [math.log1p(-o) / math.log1p(-r) for o, r in zip(out, rates, strict=True)]
    assert factors == pytest.approx([factors[0]] * 5, rel=1e-5)  # rates are rounded up to 6 digits


@pytest.mark.parametrize(("name", "objective", "scheme"), [("resnet18", "params", "filter+column"),
                                                           ("lenet5", "flops", "filter")])  # fmt: skip
def test_impossible_target_raises_target_error(
    name: str, objective: str, scheme: str, resnet: tuple[nn.Module, Graph], lenet: tuple[nn.Module, Graph]
) -> None:
    model, graph = _graph(name, resnet, lenet)
    space = Space(graph, objective, called_modules(model, X))
    n = len(space.units)
    best = space.ratio(space.cost(spec_of(space.units, [CAP] * n, [scheme] * n)))
    with pytest.raises(GoalError) as info:
        space.rescale([0.5] * n, [scheme] * n, 1e6)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert "1e+06x" in message and objective in message
    assert f"reaches {best:.1f}x" in message
    assert f"--{objective}-x" in message


def test_kept_structures_reports_groups_only_where_decided(resnet: tuple[nn.Module, Graph]) -> None:
    _, graph = resnet
    plan = plan_graph(graph, 0.5, "filter")
    kept = dict(zip([e.name for e in plan.layers], kept_structures(plan), strict=True))
    assert kept["conv1"][0] == 4 and kept["layer1.0.conv2"] == (0, 0)  # coupled: its owner decides
    assert kept["fc"] == (0, 0)  # the classifier has no prunable filters, and "filter" takes no columns


# ---- combine and base masks
def test_combine_is_elementwise_and() -> None:
    a = {"x": torch.tensor([1.0, 0.0, 1.0, 1.0]), "y": torch.tensor([0.0, 1.0])}
    b = {"x": torch.tensor([1.0, 1.0, 0.0, 1.0]), "z": torch.tensor([0.0])}
    out = combine(a, b)
    assert set(out) == {"x", "y", "z"}
    assert out["x"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert out["y"].tolist() == [0.0, 1.0] and out["z"].tolist() == [0.0]
    assert combine(a, None) is a and combine(a, {}) is a
    assert b["x"].tolist() == [1.0, 1.0, 0.0, 1.0]  # inputs untouched


def _compacted_cost(model: nn.Module, masks: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(params, MACs per sample) of the model the masks leave, counted on the compacted model itself: the
    masks multiplied into a copy by hand, ``compact``, then every parameter element and, with forward hooks,
    every multiply-accumulate of its convs and linears (gathered columns: only the kept ones)."""
    pruned = copy.deepcopy(model)
    params = dict(pruned.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    small = compact(pruned, X).eval()
    macs = 0

    def count(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            per_output = mod.in_features
        else:
            assert isinstance(mod, CompactConv2d | GatherLinear)
            per_output = mod.weight.shape[1]  # weight [F, kept columns]
        macs += out[0].numel() * per_output  # one sample

    kinds = (nn.Conv2d, nn.Linear, CompactConv2d, GatherLinear)
    handles = [m.register_forward_hook(count) for m in small.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        small(X)
    for h in handles:
        h.remove()
    return sum(p.numel() for p in small.parameters()), macs


@pytest.mark.parametrize("objective", ["params", "flops"])
def test_base_masks_stay_and_cost_is_that_of_the_compacted_model(resnet: tuple[nn.Module, Graph], objective: str):
    model, graph = resnet
    used = called_modules(model, X)
    base = masks_of(plan_graph(graph, 0.4, "filter+column"))
    space = Space(graph, objective, used, base=base)
    n = len(space.units)
    assert (space.dense.params, space.dense.flops) == _compacted_cost(model, {})
    for rates, scheme in (([0.0] * n, "filter"), ([0.3] * n, "column"), ([0.1 + 0.05 * i for i in range(n)],
                                                                          "filter+column")):  # fmt: skip
        spec = spec_of(space.units, rates, [scheme] * n)
        masks = space.masks(spec)
        for pname, mask in base.items():
            assert torch.all(masks[pname][mask == 0] == 0), pname
        cost = space.cost(spec)
        assert (cost.params, cost.flops) == _compacted_cost(model, masks), (rates[0], scheme)
    # a zero spec costs what the base alone leaves
    zero = space.cost(spec_of(space.units, [0.0] * n, ["filter"] * n))
    assert (zero.params, zero.flops) == _compacted_cost(model, base)
    if objective == "flops":
        return
    out = space.rescale([0.5] * n, ["filter+column"] * n, 6.0)
    spec = spec_of(space.units, out, ["filter+column"] * n)
    assert space.dense.params / _compacted_cost(model, space.masks(spec))[0] >= 6.0
