"""compact == masked on random CNNs and every scheme; ``count`` of the masked model agrees with the compact model's
own parameters and MACs."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ac_toolchain.compact import CompactConv2d, compact, expand_columns
from ac_toolchain.count import count
from ac_toolchain.prune import SCHEMES, prune
from tests.cost.test_analytic import physical_cost
from tests.nets import RandomNet, net_specs, randomise_bn

X = torch.randn(1, 3, 8, 8)

nets = net_specs(5, 9)


def _build(spec: tuple[list[str], list[int], int]) -> RandomNet:
    kinds, widths, seed = spec
    torch.manual_seed(seed)
    return randomise_bn(RandomNet(kinds, widths[: len(kinds)]), seed)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nets, rate=st.floats(0.0, 0.95), scheme=st.sampled_from(SCHEMES))
def test_compact_equals_masked_on_random_cnns(spec: tuple[list[str], list[int], int], rate: float, scheme: str) -> None:
    net = _build(spec)
    prune(net, X, rate, scheme)
    small = compact(net, X).eval()
    assert _max_diff(net, small) <= 1e-4
    counted = count(net, X)  # the analytic count of the masked net, which never builds a compact model
    physical = physical_cost(small, X)  # parameter elements and hook-counted MACs of the compact one
    assert counted == {"params": physical.params, "flops": physical.flops}
    assert count(small, X) == counted  # a compact model is counted as it runs
    dense_params = sum(p.numel() for p in net.parameters())
    if rate >= 0.5:  # something really went
        assert counted["params"] < dense_params


def test_column_pruned_conv_becomes_compact_conv() -> None:
    net = _build((["residual"], [4], 0))
    prune(net, X, 0.5, "column")
    small = compact(net, X)
    convs = [m for m in small.modules() if isinstance(m, CompactConv2d)]
    assert convs and all(int(m.index.numel()) < m.in_channels * 9 or m.kernel_size == (1, 1) for m in convs)
    assert _max_diff(net, small) <= 1e-4


@pytest.mark.parametrize(("stride", "dilation", "padding"), [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 1, 0), (3, 2, 1)])
def test_compact_conv_matches_conv_on_every_geometry(stride: int, dilation: int, padding: int) -> None:
    torch.manual_seed(stride * 10 + dilation)
    conv = torch.nn.Conv2d(5, 7, 3, stride, padding, dilation, bias=True)
    keep = torch.rand(45) < 0.4
    keep[0] = True
    with torch.no_grad():
        conv.weight.view(7, -1)[:, ~keep] = 0
    x = torch.randn(2, 5, 11, 9)
    got = CompactConv2d(conv, keep)(x)
    assert got.shape == conv(x).shape
    assert (got - conv(x)).abs().max() <= 1e-5
    assert got.shape[1] == 7 and int(CompactConv2d(conv, keep).index.numel()) == int(keep.sum())


def test_one_column_and_all_columns() -> None:
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 6, 6)
    one = torch.zeros(27, dtype=torch.bool)
    one[13] = True
    with torch.no_grad():
        masked = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        masked.weight.copy_(conv.weight * one.view(1, 3, 3, 3))
    assert (CompactConv2d(masked, one)(x) - masked(x)).abs().max() <= 1e-5
    every = torch.ones(27, dtype=torch.bool)
    assert (CompactConv2d(conv, every)(x) - conv(x)).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nets, rate=st.floats(0.3, 0.95))
def test_expand_columns_gives_plain_convs_with_the_same_outputs(spec: tuple[list[str], list[int], int], rate: float):
    net = _build(spec)
    prune(net, X, rate, "filter+column")
    small = compact(net, X).eval()
    wide = expand_columns(small).eval()
    assert not any(isinstance(m, CompactConv2d) for m in wide.modules())
    assert _max_diff(small, wide) <= 1e-5
    for name, m in small.named_modules():  # the kept columns are exactly the non-zero columns of the plain conv
        if isinstance(m, CompactConv2d):
            plain = wide.get_submodule(name).weight.detach()
            assert int(plain.reshape(m.out_channels, -1).ne(0).any(0).sum()) <= int(m.index.numel())
            assert int(plain.ne(0).sum()) == int(m.weight.ne(0).sum())
