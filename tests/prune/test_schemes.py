"""Schemes: exact kept counts, the right structures removed, coupling honoured, clear errors."""

import itertools
import math

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


# ---- filter+column against the joint brute-force optimum; channel against brute force


def _indicators(n: int, k: int) -> torch.Tensor:
    """[C(n, k), n] 0/1 rows: every k-subset of range(n)."""
    subsets = torch.tensor(list(itertools.combinations(range(n), k)))
    return torch.zeros(len(subsets), n, dtype=torch.float64).scatter_(1, subsets, 1.0)


def _joint_optimum(energy: torch.Tensor, k: int, m: int) -> float:
    """Brute force over every choice of k rows x m columns of a [F, K] energy matrix: the most kept energy."""
    rows, cols = _indicators(energy.shape[0], k), _indicators(energy.shape[1], m)
    return float((rows @ energy @ cols.T).max())


def _fc_counts(filters: int, columns: int, rate: float) -> tuple[int, int]:
    """filter+column's kept counts: filters, then columns, each at 1 - sqrt(1 - rate), rounded, at least one."""
    split = 1.0 - math.sqrt(1.0 - rate)
    return max(1, round((1 - split) * filters)), max(1, round((1 - split) * columns))


@settings(max_examples=40, deadline=None)
@given(width=st.integers(2, 6), rate=st.floats(0.0, 0.95), seed=st.integers(0, 10_000))
def test_filter_column_projection_is_greedy_with_each_stage_the_brute_force_optimum(
    width: int, rate: float, seed: int
) -> None:
    """filter+column is greedy (docs/algorithm.md): the best k filters by their whole rows, then the best m
    columns over those filters. Each stage is checked against brute force; the result against the joint
    optimum over every k x m choice, which it may miss, but by no more than the factor m / K (the best m of K
    columns keep at least m / K of the kept rows' energy, and those rows hold at least the optimum's)."""
    net = nn.Sequential(nn.Conv2d(2, width, 2), nn.ReLU(), nn.Conv2d(width, 2, 1))  # first conv: K = 8 columns
    graph = trace(net, torch.randn(1, 2, 4, 4))
    v = torch.randn(width, 2, 2, 2, generator=torch.Generator().manual_seed(seed))
    masks, _ = project(graph, {"0": rate}, {"0": "filter+column"}, {"0": v})
    mask = gemm_view(masks.get("0.weight", torch.ones_like(v)))
    energy = gemm_view(v).double().square()
    k, m = _fc_counts(width, 8, rate)
    rows, cols = mask.ne(0).any(1), mask.ne(0).any(0)
    assert int(rows.sum()) == k and int(cols.sum()) == m
    assert torch.equal(mask.ne(0), rows[:, None] & cols[None, :])  # whole rows and whole columns, nothing else
    assert set(rows.nonzero().flatten().tolist()) == _best_subset(energy.sum(1).tolist(), k)
    assert set(cols.nonzero().flatten().tolist()) == _best_subset(energy[rows].sum(0).tolist(), m)
    kept, best = float(energy[rows][:, cols].sum()), _joint_optimum(energy, k, m)
    assert kept <= best * (1 + 1e-9)
    assert kept >= best * m / 8 * (1 - 1e-9)


def test_filter_column_greedy_misses_the_joint_optimum_on_a_known_case() -> None:
    """Two filters, two columns, one of each kept: the stronger filter (17.41) has its energy spread, the weaker
    one (16.81) holds it in one column. Greedy keeps 9.0 of the best 16.81 (0.535; the bound m / K is 0.5).
    If the projection is ever made exact, this is the case that shows it."""
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    graph = trace(net, torch.randn(1, 2, 4, 4))
    v = torch.tensor([[3.0, 2.9], [4.1, 0.0]]).reshape(2, 2, 1, 1)
    masks, _ = project(graph, {"0": 0.75}, {"0": "filter+column"}, {"0": v})
    kept = gemm_view(masks["0.weight"]).ne(0)
    assert kept.tolist() == [[True, False], [False, False]]
    energy = gemm_view(v).double().square()
    assert _joint_optimum(energy, 1, 1) == pytest.approx(4.1**2)
    assert float(energy[kept].sum()) == pytest.approx(9.0)


class _TwoLayer(nn.Module):
    """a -> BN -> b -> head; ``coupled``: b's output is added to a's (one dependency group per channel)."""

    def __init__(self, w: int, coupled: bool) -> None:
        super().__init__()
        self.coupled = coupled
        self.a, self.bn = nn.Conv2d(2, w, 3, padding=1), nn.BatchNorm2d(w)
        self.b = nn.Conv2d(w, w if coupled else 3, 3, padding=1)
        self.fc = nn.Linear(w if coupled else 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.a(x)))
        y = self.b(h) + h if self.coupled else self.b(h)
        return self.fc(y.mean([2, 3]))


@settings(max_examples=30, deadline=None)
@given(width=st.integers(2, 6), rate=st.floats(0.0, 0.95), seed=st.integers(0, 10_000), coupled=st.booleans())
def test_channel_projection_is_the_brute_force_optimum_and_takes_the_producers(
    width: int, rate: float, seed: int, coupled: bool
) -> None:
    """channel on b keeps the k input channels whose columns b[:, c] hold the most squared norm; a channel that
    goes takes its producer's filter (a's row, bias, BN entry), and, coupled by the add, b's own filter and the
    head's input feature. The producer's tensor does not score it (a is given rows of very different norms)."""
    net = _TwoLayer(width, coupled)
    graph = trace(net, torch.randn(1, 2, 4, 4))
    gen = torch.Generator().manual_seed(seed)
    v_b = torch.randn(net.b.weight.shape, generator=gen)
    v_a = torch.randn(net.a.weight.shape, generator=gen) * torch.rand(width, 1, 1, 1, generator=gen) * 100
    masks, _ = project(graph, {"b": rate}, {"b": "channel"}, {"a": v_a, "b": v_b})
    want = _best_subset(v_b.double().square().sum((0, 2, 3)).tolist(), kept_count(width, rate))
    keep = torch.tensor([c in want for c in range(width)])
    ones = {n: torch.ones_like(p) for n, p in net.named_parameters()}
    got = {n: masks.get(n, ones[n]) for n in ones}
    rows_b = keep if coupled else torch.ones(net.b.out_channels, dtype=torch.bool)  # coupled: b's filters go too
    assert torch.equal(got["b.weight"].ne(0), (rows_b[:, None] & keep[None, :])[:, :, None, None].expand(-1, -1, 3, 3))
    for name in ("a.weight", "a.bias", "bn.weight", "bn.bias"):  # the producer: whole rows, exactly the lost ones
        assert torch.equal(got[name].ne(0), keep.reshape(-1, *[1] * (got[name].dim() - 1)).expand_as(got[name])), name
    assert torch.equal(got["b.bias"].ne(0), rows_b)
    assert torch.equal(got["fc.weight"].ne(0), rows_b[None, :].expand(2, -1))
