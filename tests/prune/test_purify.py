"""Purification: dead structure is exact, output-preserving and matches a brute-force count; redundant
removal never breaks its tolerance and undoes a failing batch exactly."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import Graph, trace, weight_of
from ac_toolchain.prune.purify import DeadReport, purify_dead, purify_redundant
from ac_toolchain.prune.schemes import Masks, apply_masks, gemm_view, prune
from ac_toolchain.zoo import build_model
from tests.nets import RandomNet, net_specs, randomise_bn

X8 = torch.randn(1, 3, 8, 8)

nets = net_specs(4, 8)


def _random_net(spec: tuple[list[str], list[int], int]) -> nn.Module:
    kinds, widths, seed = spec
    torch.manual_seed(seed)
    return randomise_bn(RandomNet(kinds, widths[: len(kinds)]), seed)


def _outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


def _clone(masks: Masks) -> Masks:
    return {k: v.clone() for k, v in masks.items()}


def _assert_frozen_untouched(net: nn.Module, graph: Graph, old: Masks, new: Masks) -> None:
    """The filters, BN entries and biases of a frozen group (model outputs, grouped convs, unknown ops) keep
    their masks. (Its consumers' input columns may lose entries: those of dead filter rows.)"""
    params = dict(net.named_parameters())
    for group in graph.groups:
        for p in group.positions if group.frozen else []:
            for name in (f"{p.module}.weight", f"{p.module}.bias"):
                if name in new and p.kind != "in":
                    before = old.get(name, torch.ones_like(params[name]))[p.index]
                    assert torch.equal(new[name][p.index], before.to(new[name].dtype))


def _check_dead(net: nn.Module, graph: Graph, masks: Masks, x: torch.Tensor) -> tuple[Masks, DeadReport]:
    """Purify; assert: input masks untouched, outputs unchanged, frozen groups kept, a fixpoint reached."""
    apply_masks(net, masks)  # the masked model is the reference
    before, kept = _outputs(net, x), _clone(masks)
    new, report = purify_dead(graph, masks)
    assert masks.keys() == kept.keys() and all(torch.equal(masks[k], kept[k]) for k in kept)
    assert all(torch.equal(new[k] * kept[k], new[k]) for k in kept)  # masks only gain zeros
    assert not any(graph.groups[g].frozen for g in report.removed_groups)
    _assert_frozen_untouched(net, graph, kept, new)
    apply_masks(net, new)
    assert (_outputs(net, x) - before).abs().max() <= 1e-5
    again, second = purify_dead(graph, new)  # graph.model is net: it reads the new weights
    assert second.filters == second.columns == 0 and not second.removed_groups
    assert all(torch.equal(again[k], new[k]) for k in new)
    json.dumps(report.to_dict())
    return new, report


def _live_rows(masks: Masks, net: nn.Module, layer: str) -> int:
    m = masks.get(f"{layer}.weight", torch.ones_like(weight_of(net.get_submodule(layer))))
    return int(gemm_view(m).ne(0).any(1).sum())


def _sweep(net: nn.Module, masks: Masks) -> tuple[dict[str, tuple[int, int]], bool]:
    """Brute force for a plain chain (conv / linear in module order, each reading the previous one's output).

    One backward sweep: a layer's filter is alive iff the next layer reads its channel through a non-zero weight
    in an alive row (the last layer's rows are the model output); a column is alive iff it is non-zero in some
    alive row. Returns {layer: (filters, columns)} that were non-zero and are not alive, and whether some layer
    had no alive filter (it then keeps filter 0).
    """
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    nonzero = {n: gemm_view(masks.get(f"{n}.weight", m.weight.detach())).ne(0) for n, m in layers}
    alive = torch.ones(layers[-1][1].weight.shape[0], dtype=torch.bool)
    out: dict[str, tuple[int, int]] = {}
    spared = False
    for i in reversed(range(len(layers))):
        name, nz = layers[i][0], nonzero[layers[i][0]]
        cols = nz[alive].any(0)
        out[name] = (int((nz.any(1) & ~alive).sum()), int((nz.any(0) & ~cols).sum()))
        if i:
            channels = layers[i - 1][1].weight.shape[0]  # a linear after flatten: channel-major features
            alive = cols.reshape(channels, -1).any(1)
            if not alive.any():
                alive[0], spared = True, True  # never an empty layer
    return {k: v for k, v in out.items() if v != (0, 0)}, spared


def _chain_sweep(net: nn.Module, masks: Masks) -> dict[str, tuple[int, int]]:
    return _sweep(net, masks)[0]


def _report_counts(report: DeadReport) -> dict[str, tuple[int, int]]:
    return {k: (e.filters, e.columns) for k, e in report.layers.items()}


CHAINS = [("lenet5", {}, (1, 28, 28)), ("vgg16", {"width_mult": 0.25}, (3, 32, 32))]
BRANCHING = [("resnet18", {"width_mult": 0.25}, (3, 32, 32)), ("mobilenetv2", {"width_mult": 0.25}, (3, 32, 32))]


def _purify_zoo(
    name: str, options: dict, shape: tuple[int, int, int], rate: float
) -> tuple[DeadReport, dict[str, tuple[int, int]] | None]:
    """Column-prune a zoo model hard and purify it (``_check_dead``'s checks); with the chain sweep's counts of
    the masks before purification for a chain model, else None."""
    torch.manual_seed(0)
    built = build_model(name, num_classes=10, in_channels=shape[0], input_size=(shape[1], shape[2]), **options)
    net = randomise_bn(built, 0)
    x = torch.randn(2, *shape)
    masks = prune(net, x[:1], rate, "column")
    graph = trace(net, x[:1])
    expected = _chain_sweep(net, masks) if (name, options, shape) in CHAINS else None
    new, report = _check_dead(net, graph, masks, x)
    assert report.filters > 0  # column pruning this hard always leaves some channel unread
    for layer in graph.layers:
        assert _live_rows(new, net, layer) >= 1
    return report, expected


@pytest.mark.parametrize(("name", "options", "shape"), CHAINS, ids=[z[0] for z in CHAINS])
@pytest.mark.parametrize("rate", [0.7, 0.95])
def test_dead_structure_is_exact_on_the_zoo_chains(name: str, options: dict, shape: tuple, rate: float) -> None:
    """LeNet-5 and VGG-16 are plain chains: the per-layer counts equal the brute-force backward sweep."""
    report, expected = _purify_zoo(name, options, shape, rate)
    assert expected and _report_counts(report) == expected  # (non-empty: report.filters > 0)


@pytest.mark.parametrize(("name", "options", "shape"), BRANCHING, ids=[z[0] for z in BRANCHING])
@pytest.mark.parametrize("rate", [0.7, 0.95])
def test_dead_structure_on_branching_zoo_models_keeps_outputs_and_every_layer(
    name: str, options: dict, shape: tuple, rate: float
) -> None:
    """ResNet-18 and MobileNetV2 (residual adds, depthwise convs) have no chain brute force: purification must
    remove something, keep the outputs, leave frozen groups and every layer alive, and reach a fixpoint."""
    report, _ = _purify_zoo(name, options, shape, rate)
    assert report.removed_groups


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nets, rate=st.floats(0.7, 0.95))
def test_dead_structure_keeps_outputs_on_random_nets_after_column_pruning(spec: tuple, rate: float) -> None:
    net = _random_net(spec)
    masks = prune(net, X8, rate, "column")
    _check_dead(net, trace(net, X8), masks, torch.randn(3, 3, 8, 8))


def _sparse_masks(net: nn.Module, keep: float, seed: int) -> Masks:
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            masks[f"{name}.weight"] = (torch.rand(m.weight.shape, generator=gen) < keep).float()
    return masks


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nets, keep=st.floats(0.03, 0.4))
def test_removed_groups_are_unread_in_the_masked_model(spec: tuple, keep: float) -> None:
    """Irregular masks leave columns that only dead rows read, so the fixpoint takes several passes. The
    independent check: in the model *before* purification, randomising every removed group's filter rows, BN
    entries and depthwise filters at once changes no output — nothing reads them, directly or through others."""
    net = _random_net(spec)
    masks = _sparse_masks(net, keep, spec[2])
    apply_masks(net, masks)
    x = torch.randn(3, 3, 8, 8)
    graph = trace(net, X8)
    reference, perturbed = copy.deepcopy(net), copy.deepcopy(net)
    _, report = _check_dead(net, graph, masks, x)
    params = dict(perturbed.named_parameters())
    with torch.no_grad():
        for gid in report.removed_groups:
            for p in graph.groups[gid].positions:
                for pname in (f"{p.module}.weight", f"{p.module}.bias"):
                    if p.kind != "in" and pname in params:
                        params[pname][p.index] = torch.randn_like(params[pname][p.index]) * 10
    assert (_outputs(perturbed, x) - _outputs(reference, x)).abs().max() <= 1e-4


def _one_by_one(*widths: int, k: int = 1) -> nn.Module:
    """A plain chain conv - BN - ReLU - ... - conv - BN; layer i is module "3i"."""
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(widths):
        layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU()]
    torch.manual_seed(0)
    return randomise_bn(nn.Sequential(*layers[:-1]), 0)


def test_the_fixpoint_follows_a_path_through_two_layers() -> None:
    """A(3->4) -> B(4->3) -> C(3->2): C never reads B's channel 2; B's row 2 is the only reader of A's
    channel 3. Pass 1 removes B's filter 2, which leaves B's column 3 without an alive row; pass 2 then removes
    A's filter 3."""
    net = _one_by_one(3, 4, 3, 2)  # layers "0", "3", "6"
    b = torch.ones(3, 4, 1, 1)
    b[[0, 1], 3] = 0  # only row 2 reads A's channel 3
    c = torch.ones(2, 3, 1, 1)
    c[:, 2] = 0  # nobody reads B's channel 2
    masks = {"3.weight": b, "6.weight": c}
    apply_masks(net, masks)
    graph = trace(net, torch.randn(1, 3, 4, 4))
    expected = _chain_sweep(net, masks)
    new, report = _check_dead(net, graph, masks, torch.randn(2, 3, 4, 4))
    assert report.passes == 2 and len(report.removed_groups) == 2
    assert _report_counts(report) == {"0": (1, 0), "3": (1, 1)} == expected
    assert report.filters == 2 and report.columns == 1
    assert new["0.weight"][3].eq(0).all() and new["0.bias"][3] == 0 and new["3.weight"][2].eq(0).all()
    assert new["1.weight"][3] == 0 and new["1.bias"][3] == 0 and new["4.weight"][2] == 0  # BN entries
    assert new["0.weight"][:3].eq(1).all() and new["3.weight"][[0, 1], :3].eq(1).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    widths=st.lists(st.integers(2, 7), min_size=2, max_size=5),
    k=st.sampled_from([1, 3]),
    keep=st.floats(0.1, 0.6),
    seed=st.integers(0, 2**16),
)
def test_irregular_masks_on_chains_match_the_brute_force_sweep(widths: list[int], k: int, keep: float, seed: int):
    """Irregular masks make the fixpoint take several passes; the counts must equal one backward sweep."""
    net = _one_by_one(3, *widths, k=k)
    masks = _sparse_masks(net, keep, seed)
    expected, spared = _sweep(net, masks)
    assume(not spared)  # which unread group a layer keeps is a free choice; the sweep keeps #0
    _, report = _check_dead(net, trace(net, torch.randn(1, 3, 4, 4)), masks, torch.randn(2, 3, 4, 4))
    assert not report.spared_groups and _report_counts(report) == expected


def test_frozen_groups_are_never_removed() -> None:
    class TwoHeads(nn.Module):
        def __init__(self, expose: bool) -> None:
            super().__init__()
            self.body, self.head, self.expose = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1), expose

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
            f = self.body(x)
            return (self.head(f), f) if self.expose else self.head(f)

    masks = {"head.weight": torch.ones(2, 4, 1, 1)}
    masks["head.weight"][:, 0] = 0
    for expose, removed in ((True, 0), (False, 1)):
        torch.manual_seed(0)
        net = TwoHeads(expose)
        new, report = purify_dead(trace(net, torch.randn(1, 3, 2, 2)), masks)
        assert report.filters == removed  # the body's channel 0 is a model output when exposed
        assert ("body.weight" in new) == bool(removed)


def test_a_layer_nobody_reads_keeps_one_filter() -> None:
    net = _one_by_one(3, 4, 3, 2)
    masks = {"6.weight": torch.zeros(2, 3, 1, 1)}  # C reads nothing: every filter of B is unread
    graph = trace(net, torch.randn(1, 3, 4, 4))
    expected = _chain_sweep(net, masks)
    new, report = _check_dead(net, graph, masks, torch.randn(2, 3, 4, 4))
    assert len(report.spared_groups) == 1 and _live_rows(new, net, "3") == 1
    assert _report_counts(report) == {"3": (2, 0)} == expected
    assert _live_rows(new, net, "0") == 4  # the kept filter still reads all of A


def test_a_layer_pruned_away_before_leaves_its_producer_one_filter() -> None:
    net = _one_by_one(3, 4, 3, 2)
    masks = {"3.weight": torch.zeros(3, 4, 1, 1), "6.weight": torch.zeros(2, 3, 1, 1)}
    masks |= {name: torch.zeros(3) for name in ("3.bias", "4.weight", "4.bias")}  # B was pruned away entirely
    # (rows, bias, BN entries, C's columns), so nothing reads A either
    graph = trace(net, torch.randn(1, 3, 4, 4))
    new, report = _check_dead(net, graph, masks, torch.randn(2, 3, 4, 4))
    assert _report_counts(report) == {"0": (3, 0)} and len(report.spared_groups) == 1
    assert _live_rows(new, net, "0") == 1


# ---------------------------------------------------------------- redundant structure


def _small() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )  # fmt: skip
    with torch.no_grad():  # planted near-zero structures: filter 2 of "0", filter 4 of "3", column 7 of "3"
        weight_of(net[0])[2] *= 1e-4
        weight_of(net[3])[4] *= 1e-4
        weight_of(net[3]).view(6, -1)[:, 7] *= 1e-4
    return randomise_bn(net, 1)


PLANTED = {("0", "row", 2), ("3", "row", 4), ("3", "col", 7)}
FREE = PLANTED | {("3", "col", j) for j in range(18, 27)} | {("8", "col", 4)}  # with the consumers' columns


def _structures(net: nn.Module) -> dict[tuple[str, str, int], bool]:
    """Every filter row and GEMM column of the small net: is it still non-zero."""
    out: dict[tuple[str, str, int], bool] = {}
    for name in ("0", "3", "8"):
        w = gemm_view(weight_of(net.get_submodule(name)).detach())
        out |= {(name, "row", i): bool(w[i].ne(0).any()) for i in range(w.shape[0])}
        out |= {(name, "col", j): bool(w[:, j].ne(0).any()) for j in range(w.shape[1])}
    return out


class FakeRun:
    """evaluate: a deterministic accuracy from which structures remain; recalibrate: moves BN statistics."""

    def __init__(self, net: nn.Module, cost: dict[tuple[str, str, int], float], base: float = 0.9) -> None:
        self.cost, self.base, self.calls = cost, base, 0
        self.states: list[tuple[dict[str, torch.Tensor], float]] = []  # (state, accuracy) per evaluation

    def recalibrate(self, net: nn.Module) -> None:
        self.calls += 1
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.01 * self.calls)  # type: ignore[union-attr]

    def evaluate(self, net: nn.Module) -> float:
        gone = [k for k, alive in _structures(net).items() if not alive]
        acc = self.base - sum(self.cost.get(k, 0.0) for k in gone)
        self.states.append(({k: v.clone() for k, v in net.state_dict().items()}, acc))
        return acc


def _uniform_cost(net: nn.Module, each: float) -> dict[tuple[str, str, int], float]:
    return {k: (0.0 if k in FREE else each) for k in _structures(net)}


def _same_state(net: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_planted_tiny_structures_go_first_and_nothing_else() -> None:
    net = _small()
    run = FakeRun(net, _uniform_cost(net, 0.01))
    graph = trace(net, X8)
    masks, report = purify_redundant(net, graph, {}, run.evaluate, run.recalibrate, tolerance=0.5)
    gone = {k for k, alive in _structures(net).items() if not alive}
    assert PLANTED <= gone <= FREE
    assert report.accuracy_after == report.accuracy_before == pytest.approx(0.9)
    assert {k: (e.filters, e.columns) for k, e in report.layers.items()} == {"0": (1, 0), "3": (1, 1)}
    assert report.stopped == "a single structure breaks the tolerance" and report.steps[-1].tried == 1
    accepted = [s for s in report.steps if s.accepted]
    assert sum(s.tried for s in accepted) == 3 and report.steps[0].tried == 4  # 5 % of 99, then halved
    assert masks["0.weight"][2].eq(0).all() and masks["3.weight"][:, 2].eq(0).all()  # the consumer follows
    json.dumps(report.to_dict())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), tolerance=st.floats(0.0, 5.0), batch=st.sampled_from([0.05, 0.2, 0.5]))
def test_redundant_purification_never_exceeds_its_tolerance(seed: int, tolerance: float, batch: float) -> None:
    net = _small()
    gen = torch.Generator().manual_seed(seed)
    keys = list(_structures(net))
    run = FakeRun(net, dict(zip(keys, (torch.rand(len(keys), generator=gen) * 0.004).tolist(), strict=True)))
    graph = trace(net, X8)
    weights = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    masks, report = purify_redundant(net, graph, {}, run.evaluate, run.recalibrate, tolerance, batch, max_steps=12)
    assert 100 * (report.accuracy_before - report.accuracy_after) <= tolerance + 1e-9
    for step, (_, acc) in zip(report.steps, run.states[1:], strict=True):
        assert step.accuracy == acc and step.accepted == (100 * (run.states[0][1] - acc) <= tolerance + 1e-9)
    last = [state for step, (state, _) in zip(report.steps, run.states[1:], strict=True) if step.accepted]
    assert _same_state(net, last[-1] if last else run.states[0][0])  # rejected batches were undone exactly
    for name, w in weights.items():  # the model holds the original weights times the final masks
        assert torch.equal(net.state_dict()[name], w * masks[name] if name in masks else w)
    assert len(report.steps) <= 12
    for layer in graph.layers:
        assert _live_rows(masks, net, layer) >= 1


def _nonzero(net: nn.Module) -> int:
    return sum(int(p.ne(0).sum()) for p in net.parameters())


class Strict(FakeRun):
    """Any weight that goes costs a point; the state after every recalibration is recorded."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, {})
        self.nonzero, self.after = _nonzero(net), list[dict[str, torch.Tensor]]()

    def recalibrate(self, net: nn.Module) -> None:
        super().recalibrate(net)
        self.after.append({k: v.clone() for k, v in net.state_dict().items()})

    def evaluate(self, net: nn.Module) -> float:
        return 0.8 if _nonzero(net) == self.nonzero else 0.79


def test_zero_tolerance_with_any_removal_hurting_removes_nothing() -> None:
    net = _small()
    masks = {"3.weight": torch.ones(6, 6, 3, 3)}
    masks["3.weight"][:, 0] = 0  # pruned before: stays as it is
    apply_masks(net, masks)
    run, original = Strict(net), _clone(masks)
    out, report = purify_redundant(net, trace(net, X8), masks, run.evaluate, run.recalibrate, tolerance=0.0)
    assert all(torch.equal(masks[k], original[k]) for k in original)  # the caller's masks are not touched
    assert report.filters == report.columns == 0 and not report.layers
    assert out.keys() == masks.keys() and all(torch.equal(out[k], masks[k]) for k in masks)
    assert report.steps and all(not s.accepted for s in report.steps) and report.steps[-1].tried == 1
    assert [s.tried for s in report.steps] == [4, 2, 1]  # 5 % of 91 candidates, halved on each failure
    assert _same_state(net, run.after[0])  # weights and BN state as after the first recalibration
    assert report.accuracy_after == report.accuracy_before == 0.8


def test_without_an_accuracy_cost_every_layer_keeps_a_filter_and_a_column() -> None:
    net = _small()
    run = FakeRun(net, {})
    graph = trace(net, X8)
    masks, report = purify_redundant(net, graph, {}, run.evaluate, run.recalibrate, 0.0, batch=0.5, max_steps=200)
    assert report.stopped == "nothing left to remove"
    for layer in graph.layers:
        m = gemm_view(masks.get(f"{layer}.weight", torch.ones(1, 1)))
        assert m.ne(0).any(1).sum() >= 1 and m.ne(0).any(0).sum() >= 1
    assert torch.isfinite(_outputs(net, X8)).all()


def test_step_budget_and_bad_arguments() -> None:
    net = _small()
    run = FakeRun(net, {})
    _, report = purify_redundant(net, trace(net, X8), {}, run.evaluate, run.recalibrate, 1.0, max_steps=1)
    assert len(report.steps) == 1 and report.stopped == "step budget"
    for bad in ({"batch": 0.0}, {"batch": 1.5}, {"tolerance": -1.0}, {"max_steps": -1}):
        kwargs = {"tolerance": 1.0, **bad}
        with pytest.raises(ConfigError):
            purify_redundant(net, trace(net, X8), {}, run.evaluate, run.recalibrate, **kwargs)  # type: ignore[arg-type]
