"""The analytic cost equals what ``compact`` physically keeps: zoo models, random CNNs, every scheme.

The reference figures are taken on the compact model itself: its parameter elements, and MACs counted with
forward hooks here (weight elements x output positions of each conv / linear call), never with ``count``.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ac_toolchain.compact import CompactConv2d, GatherLinear, compact
from ac_toolchain.cost.analytic import Cost, called_modules, masks_cost, plan_cost, structure_cost
from ac_toolchain.count import count
from ac_toolchain.graph import trace
from ac_toolchain.prune import SCHEMES
from ac_toolchain.prune.schemes import masks_of, plan_pruning
from ac_toolchain.zoo import build_model
from tests.nets import BLOCKS, RandomNet

MAC_LAYERS = (nn.Conv2d, nn.Linear, CompactConv2d, GatherLinear)




def physical_cost(model: nn.Module, x: torch.Tensor) -> Cost:
    """Every parameter element of ``model``, and the MACs of one forward as it runs."""
    macs = [0]

    def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        spatial = out.shape[2] * out.shape[3] if out.dim() == 4 else 1
        macs[0] += mod.weight.numel() * spatial  # type: ignore[operator]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, MAC_LAYERS)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return Cost(sum(p.numel() for p in model.parameters()), macs[0])


def _check(model: nn.Module, x: torch.Tensor, rates: float | dict, scheme: str | dict) -> Cost:
    """Plan, prune, compact: every analytic route and ``count`` agree with the compact model."""
    model.eval()
    plan = plan_pruning(model, x, rates, scheme)
    masks = masks_of(plan)
    with torch.no_grad():  # what prune() does, without planning a second time
        for name, param in model.named_parameters():
            param.mul_(masks.get(name, torch.ones(())))
    want = physical_cost(compact(model, x), x)
    assert plan_cost(plan) == want
    assert structure_cost(plan.graph, plan.pruned_groups, plan.columns) == want
    assert plan_cost(plan, called_modules(model, x)) == want
    assert masks_cost(plan.graph, masks) == want
    assert count(model, x) == {"params": want.params, "flops": want.flops}
    return want


ZOO = {  # name: build options, input side, rates (kept few: the file runs in well under a minute)
    "lenet5": ({}, 28, (0.3, 0.9)),
    "vgg16": ({"width_mult": 0.25}, 32, (0.8,)),
    "resnet18": ({"width_mult": 0.25}, 32, (0.5, 0.9)),
    "mobilenetv2": ({"width_mult": 0.25}, 32, (0.3, 0.7)),
}


@pytest.mark.parametrize(
    ("name", "scheme", "rate"),
    [(name, scheme, rate) for name, (_, _, rates) in ZOO.items() for scheme in SCHEMES for rate in rates],
)
def test_zoo_cost_equals_compact_model(name: str, scheme: str, rate: float) -> None:
    torch.manual_seed(0)
    options, size, _ = ZOO[name]
    model = build_model(name, num_classes=10, in_channels=3, input_size=(size, size), **options)
    x = torch.randn(1, 3, size, size)
    dense = physical_cost(model, x)
    got = _check(model, x, rate, scheme)
    assert got.params < dense.params and got.flops < dense.flops


nets = st.tuples(
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5),
    st.lists(st.integers(2, 9), min_size=5, max_size=5),
    st.integers(0, 2**16),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nets, rate=st.floats(0.0, 0.95), scheme=st.sampled_from((*SCHEMES, "mixed")))
def test_random_cnn_cost_equals_compact_model(spec: tuple[list[str], list[int], int], rate: float, scheme: str):
    kinds, widths, seed = spec
    torch.manual_seed(seed)
    net = RandomNet(kinds, widths[: len(kinds)])
    x = torch.randn(1, 3, 8, 8)
    if scheme == "mixed":  # a scheme and a rate per layer: filter next to column next to channel
        pick = random.Random(seed)
        layers = trace(net, x).layers
        schemes = {n: pick.choice(SCHEMES) for n in layers}
        _check(net, x, {n: pick.uniform(0.0, 0.95) for n in layers}, schemes)
    else:
        _check(net, x, rate, scheme)


class Chain(nn.Module):
    """conv 3->4 (3x3, bias) -> ReLU -> conv 4->2 (3x3, no bias), padding 1, on 5x5."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def test_hand_computed_two_conv_chain() -> None:
    net, x = Chain(), torch.randn(1, 3, 5, 5)
    graph = trace(net, x)
    assert structure_cost(graph, set(), {}) == Cost(4 * 27 + 4 + 2 * 36, (4 * 27 + 2 * 36) * 25)
    dead = {graph.layer_out["c1"][1]}  # filter 1 of c1 (and c2's input channel 1)
    keep = torch.ones(36, dtype=torch.bool)
    keep[0] = False  # column (c=0, kh=0, kw=0) of c2
    keep[18:27] = False  # every column of channel 2: nothing reads it, so c1's filter 2 goes as well
    # c1: 2 filters (0, 3) x 27 columns + 2 biases = 56 params; 2 * 27 * 25 = 1350 MACs
    # c2: 2 filters x (8 columns of channel 0 + 9 of channel 3) = 34 params; 34 * 25 = 850 MACs
    got = structure_cost(graph, dead, {"c2": keep})
    assert got == Cost(56 + 34, 1350 + 850)
    assert net.c1.bias is not None
    with torch.no_grad():  # the same structure as zeros: the compact model agrees
        net.c1.weight[1] = 0
        net.c1.bias[1] = 0
        net.c2.weight[:, 1] = 0
        net.c2.weight.view(2, -1)[:, ~keep] = 0
    assert physical_cost(compact(net, x), x) == got
    assert masks_cost(graph, {}) == got  # no masks: the live weights' zeros


class WithExtras(nn.Module):
    """conv -> BN -> PReLU -> linear; ``spare`` is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4), nn.PReLU()
        self.fc = nn.Linear(4 * 9, 3)
        self.spare = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.act(self.bn(self.conv(x))), 1))


def test_bn_counts_live_channels_and_other_modules_count_whole_when_called() -> None:
    net, x = WithExtras(), torch.randn(1, 2, 3, 3)
    graph = trace(net, x)
    used = called_modules(net, x)
    assert "spare" not in used and {"conv", "bn", "act", "fc"} <= used
    # PReLU is not understood by the graph: its channels are frozen, so nothing can go
    assert structure_cost(graph, set(), {}, used) == Cost(8 + 8 + 1 + 36 * 3 + 3, 8 * 9 + 108)
    assert structure_cost(graph, set(), {}).params == 8 + 8 + 1 + 111 + 30  # None: every module counts
    keep = torch.ones(36, dtype=torch.bool)
    keep[:9] = False  # fc's 9 features of channel 0: a frozen channel still loses its columns
    assert structure_cost(graph, set(), {"fc": keep}, used) == Cost(8 + 8 + 1 + 27 * 3 + 3, 8 * 9 + 81)
