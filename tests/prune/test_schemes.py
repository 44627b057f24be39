"""Schemes: exact kept counts, the right structures removed, coupling honoured, clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ac_toolchain.errors import ConfigError, ModelError
from ac_toolchain.graph import trace, weight_of
from ac_toolchain.prune import kept_count, plan_pruning, prune
from ac_toolchain.prune.schemes import gemm_view, keep_topk, project
from tests.nets import RandomNet, randomise_bn

X = torch.randn(1, 3, 8, 8)


def _chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(),
        nn.Conv2d(10, 7, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(7 * 64, 5),
    ).eval()  # fmt: skip


@pytest.mark.parametrize(
    ("total", "rate", "kept"), [(10, 0.5, 5), (7, 0.5, 4), (10, 0.95, 1), (64, 0.9, 6), (3, 0.0, 3)]
)
def test_kept_count_rounds_and_keeps_one(total: int, rate: float, kept: int) -> None:
    assert kept_count(total, rate) == kept


def test_keep_topk_is_the_projection() -> None:
    keep = keep_topk(torch.tensor([0.5, 3.0, 1.0, 2.0]), 2)
    assert keep.tolist() == [False, True, False, True]


def test_filter_scheme_removes_the_lowest_l2_filters_and_their_consumers() -> None:
    net = _chain()
    norms = gemm_view(net[0].weight.detach()).norm(dim=1)
    prune(net, X, {"0": 0.5}, "filter")
    w = gemm_view(net[0].weight.detach())
    alive = w.ne(0).any(1)
    assert set(alive.nonzero().flatten().tolist()) == set(norms.topk(5).indices.tolist())
    assert net[0].bias[~alive].abs().max() == 0 and net[1].weight[~alive].abs().max() == 0
    assert net[3].weight[:, ~alive].abs().max() == 0  # the consumer's input channels went too


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_column_scheme_keeps_exactly_round_columns(rate: float) -> None:
    net = _chain()
    plan = plan_pruning(net, X, rate, "column")
    for entry in plan.layers:
        assert entry.columns_kept == kept_count(entry.columns_total, rate)
    prune(net, X, rate, "column")
    kept = int(gemm_view(net[3].weight.detach()).ne(0).any(0).sum())
    assert kept == kept_count(10 * 9, rate)


def test_filter_plus_column_splits_the_rate() -> None:
    net = _chain()
    (first, *_) = plan_pruning(net, X, {"0": 0.75}, "filter+column").layers
    assert first.groups_kept == kept_count(10, 0.5) and first.columns_kept == kept_count(27, 0.5)


def test_channel_scheme_never_empties_a_concat_branch() -> None:
    torch.manual_seed(0)
    net = randomise_bn(RandomNet(["concat"], [2]), 0)
    prune(net, X, 0.9, "channel")
    left = net.blocks[0].left[0].weight.detach()
    assert left.flatten(1).ne(0).any(1).sum() >= 1


def test_residual_coupled_filters_follow_the_first_layer() -> None:
    torch.manual_seed(0)
    net = randomise_bn(RandomNet(["residual", "residual"], [4, 4]), 0)
    plan = plan_pruning(net, X, 0.5, "filter")
    by_name = {e.name: e for e in plan.layers}
    assert by_name["stem.0"].groups_kept == 3  # the residual stream: 6 channels -> 3
    assert by_name["blocks.1.b.0"].coupled_to == "stem.0"
    assert by_name["blocks.0.a.0"].groups_kept == 3 and by_name["blocks.0.a.0"].coupled_to is None


@pytest.mark.parametrize(
    ("rates", "scheme", "error", "needle"),
    [
        (1.0, "filter", ConfigError, "rates are in [0, 1)"),
        (-0.1, "filter", ConfigError, "rates are in [0, 1)"),
        ({"nope": 0.5}, "filter", ModelError, "unknown layer(s) ['nope']"),
        (0.5, "rows", ConfigError, "is not one of: filter, channel, column, filter+column"),
        (0.5, {"0": "bogus"}, ConfigError, "scheme 'bogus' for 0"),
    ],
)
def test_bad_rates_and_schemes(rates: object, scheme: object, error: type, needle: str) -> None:
    with pytest.raises(error) as err:
        prune(_chain(), X, rates, scheme)  # type: ignore[arg-type]
    assert needle in str(err.value)


def test_untraceable_model_is_a_clear_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(ModelError, match=r"torch\.fx cannot trace Branchy"):
        prune(Branchy(), X, 0.5, "filter")


# ---- the projection on given tensors, against brute force


class _Coupled(nn.Module):
    """a -> b with a residual add: a's and b's filters are one dependency group each, coupled."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(2, w, 3, padding=1), nn.Conv2d(w, w, 1), nn.Linear(w, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.fc((self.b(h) + h).mean([2, 3]))


def _best_subset(scores: list[float], k: int) -> set[int]:
    """Brute force: the k-subset that keeps the most squared norm (= the closest point of the set)."""
    import itertools

    return set(max(itertools.combinations(range(len(scores)), k), key=lambda s: sum(scores[i] for i in s)))


@settings(max_examples=25, deadline=None)
@given(width=st.integers(2, 6), rate=st.floats(0.0, 0.9), seed=st.integers(0, 10_000))
def test_filter_projection_of_given_tensors_is_the_brute_force_optimum(width: int, rate: float, seed: int) -> None:
    net = _Coupled(width)
    graph = trace(net, torch.randn(1, 2, 4, 4))
    gen = torch.Generator().manual_seed(seed)
    given_w = {name: torch.randn(weight_of(net.get_submodule(name)).shape, generator=gen) for name in ("a", "b")}
    masks, _ = project(graph, {"a": rate}, {"a": "filter"}, given_w)
    # the group of filter f spans a's row f and b's row f (the add couples them): score both, squared
    scores = [float(given_w["a"][f].square().sum() + given_w["b"][f].square().sum()) for f in range(width)]
    rows_a, rows_b = (gemm_view(masks.get(f"{n}.weight", torch.ones_like(given_w[n]))).ne(0).any(1) for n in "ab")
    assert set(rows_a.nonzero().flatten().tolist()) == _best_subset(scores, kept_count(width, rate))
    assert torch.equal(rows_a, rows_b)


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.0, 0.95), seed=st.integers(0, 10_000))
def test_column_projection_of_given_tensors_is_the_brute_force_optimum(rate: float, seed: int) -> None:
    conv = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Conv2d(3, 2, 1))  # first conv: K = 2*2*2 = 8 columns
    graph = trace(conv, torch.randn(1, 2, 4, 4))
    v = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(seed))
    masks, _ = project(graph, {"0": rate}, {"0": "column"}, {"0": v})
    scores = gemm_view(v).square().sum(0).tolist()
    kept = gemm_view(masks.get("0.weight", torch.ones_like(v))).ne(0).any(0)
    assert set(kept.nonzero().flatten().tolist()) == _best_subset(scores, kept_count(8, rate))


def test_projection_reads_the_given_tensors_not_the_live_weights() -> None:
    net = _chain()
    graph = trace(net, X)
    flipped = {"0": -net[0].weight.detach().abs() * 0 + torch.arange(10.0)[:, None, None, None]}  # row f has norm ~ f
    masks, _ = project(graph, {"0": 0.5}, {"0": "filter"}, flipped)
    assert gemm_view(masks["0.weight"]).ne(0).any(1).tolist() == [False] * 5 + [True] * 5
    assert net[0].weight.ne(0).all()  # the model was not touched


def test_columns_follow_the_channels_an_earlier_layer_kept() -> None:
    net = _chain()
    plan = plan_pruning(net, X, {"0": 0.5, "3": 0.5}, {"0": "filter", "3": "column"})
    layer3 = next(e for e in plan.layers if e.name == "3")
    assert layer3.columns_kept == kept_count(5 * 9, 0.5)  # of the 45 columns of the 5 channels still there
    keep = plan.columns["3"].reshape(10, 9).any(1)
    assert not (keep & ~torch.tensor([g not in plan.pruned_groups for g in plan.graph.layer_in["3"]])).any()


def test_classifier_takes_the_whole_filter_column_rate_on_its_columns() -> None:
    plan = plan_pruning(_chain(), X, {"6": 0.75}, {"6": "filter+column"})
    (fc,) = plan.layers
    assert fc.groups_total == 0 and fc.columns_kept == kept_count(7 * 64, 0.75)
