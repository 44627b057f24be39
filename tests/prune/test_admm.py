"""ADMM: the penalty through autograd, Z and U as copies, the Z-step as a projection of W + U, the residual
falling as rho rises on real (tiny) training, and the state surviving a checkpoint."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ac_toolchain.config import AdmmConfig
from ac_toolchain.graph import trace
from ac_toolchain.prune.admm import Admm, AdmmSettings, hard_prune_masks, rho_at
from ac_toolchain.prune.schemes import gemm_view
from ac_toolchain.prune.spec import uniform_spec
from ac_toolchain.train import FitSettings, fit

X = torch.randn(1, 1, 8, 8)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip


def _data(n: int = 256) -> TensorDataset:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()  # 4 learnable classes
    return TensorDataset(x, y)


def _admm(net: nn.Module, settings: AdmmSettings | None = None) -> Admm:
    graph = trace(net, X)
    return Admm(graph, uniform_spec(graph.layers, 0.75, "filter+column"), settings or AdmmSettings())


def test_rho_rises_geometrically_from_init_to_max() -> None:
    s = AdmmSettings(iterations=5, rho_init=1e-3, rho_max=1e1)
    assert [round(rho_at(k, s), 9) for k in range(5)] == [0.001, 0.01, 0.1, 1.0, 10.0]


def test_z_and_u_are_copies_never_views_of_the_weights() -> None:
    net = _net()
    admm = _admm(net)
    w = net[3].weight
    z_before = admm.Z["3"].clone()
    assert admm.Z["3"].data_ptr() != w.data_ptr() and admm.U["3"].data_ptr() != w.data_ptr()
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(admm.Z["3"], z_before)  # moving W did not move Z
    admm.update()
    assert admm.Z["3"].data_ptr() != w.data_ptr()
    assert not torch.equal(admm.Z["3"], w.detach())  # projected: some structures are zero in Z, none in W


def test_first_penalty_is_nonzero_and_flows_through_autograd() -> None:
    net = _net()
    admm = _admm(net, AdmmSettings(rho_init=0.5, rho_max=0.5))
    loss = admm.extra_loss(net)
    assert loss is not None and float(loss.detach()) > 0  # Z = Pi(W) != W at once (NNI: Z aliased W, no penalty)
    want = sum(0.5 * 0.5 * (weight - admm.Z[k] + admm.U[k]).square().sum()
               for k, weight in ((k, net.get_submodule(k).weight) for k in admm.layers))  # fmt: skip
    assert torch.allclose(loss, want)
    loss.backward()
    grad = net[3].weight.grad
    assert grad is not None and torch.allclose(grad, 0.5 * (net[3].weight - admm.Z["3"]).detach())


def _kept(n: int, rate: float) -> int:
    return max(1, round((1 - rate) * n))


def _top(scores: torch.Tensor, k: int, allowed: torch.Tensor) -> torch.Tensor:
    """bool mask of the k highest scores among the allowed entries (plain torch)."""
    order = [i for i in scores.argsort(descending=True).tolist() if allowed[i]]
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def _reference_z(v: dict[str, torch.Tensor], rate: float, scheme: str) -> dict[str, torch.Tensor]:
    """Z = Pi_S(v) on ``_net``'s chain 0 -> 3 -> 7 (no residual add), written out from the scheme rules:

    * filter: keep the ``round((1 - r) n)`` filter rows of v of largest L2 norm (whole rows); the next layer
      loses the input channels of the rows that went (flatten -> linear: 4 features per channel);
    * column: keep the ``round((1 - r) K)`` columns of largest L2 norm over every row;
    * filter+column: filters at ``1 - sqrt(1 - r)``, then columns over the kept rows among the columns whose input
      channel is still there, at that same rate; the classifier (its outputs are the model's) keeps all its rows
      and takes the whole rate on its columns.
    """
    split = 1 - math.sqrt(1 - rate)
    out, kept_channels = {}, None
    for name, taps in (("0", 9), ("3", 9), ("7", 4)):
        g = v[name].double().reshape(v[name].shape[0], -1)
        f, k = g.shape
        live = torch.ones(k, dtype=torch.bool) if kept_channels is None else kept_channels.repeat_interleave(taps)
        rows, cols = torch.ones(f, dtype=torch.bool), live
        classifier = name == "7"
        if scheme in ("filter", "filter+column") and not classifier:
            rows = _top(g.square().sum(1), _kept(f, rate if scheme == "filter" else split), rows)
        if scheme in ("column", "filter+column"):
            col_rate = split if scheme == "filter+column" and not classifier else rate
            cols = _top(g[rows].square().sum(0), _kept(int(live.sum()), col_rate), live)
        out[name] = v[name] * (rows[:, None] & cols[None, :]).reshape(v[name].shape)
        kept_channels = rows
    return out


@pytest.mark.parametrize("scheme", ["filter", "column", "filter+column"])
def test_z_step_projects_w_plus_u_and_u_accumulates_the_gap(scheme: str) -> None:
    net = _net()
    graph = trace(net, X)
    admm = Admm(graph, uniform_spec(graph.layers, 0.75, scheme), AdmmSettings())
    gen = torch.Generator().manual_seed(3)
    admm.U = {k: torch.randn(v.shape, generator=gen) for k, v in admm.U.items()}  # W + U ranks unlike W
    w = {k: net.get_submodule(k).weight.detach().clone() for k in admm.layers}
    u_old = {k: v.clone() for k, v in admm.U.items()}
    assert admm.layers == ["0", "3", "7"]
    admm.update()
    want = _reference_z({k: w[k] + u_old[k] for k in admm.layers}, 0.75, scheme)
    rho_ratio = admm.log[0]["rho"] / admm.rho
    for k in admm.layers:
        assert torch.allclose(admm.Z[k], want[k].to(admm.Z[k].dtype)), k
        assert torch.allclose(admm.U[k], (u_old[k] + w[k] - admm.Z[k]) * rho_ratio, atol=1e-6)
    kept_rows = {k: int(want[k].reshape(want[k].shape[0], -1).ne(0).any(1).sum()) for k in admm.layers}
    assert kept_rows == {"filter": {"0": 2, "3": 2, "7": 4}, "column": {"0": 8, "3": 8, "7": 4},
                         "filter+column": {"0": 4, "3": 4, "7": 4}}[scheme]  # fmt: skip


def test_residual_falls_as_rho_rises_during_real_training() -> None:
    net = _net()
    settings = AdmmSettings(iterations=5, epochs_per_iteration=1, rho_init=1e-2, rho_max=1e1)
    admm = _admm(net, settings)
    before = _pruned_share(admm, net)
    fit(net, _data(), FitSettings(5, 0.05, 32), torch.device("cpu"), controllers=[admm])
    res = [e["max_residual"] for e in admm.log]
    assert len(res) == 5 and [e["rho"] for e in admm.log] == [rho_at(k, settings) for k in range(5)]
    assert res[-1] < 0.2 * res[0], res
    # W ends close to its structured set: hard pruning now removes a small part of its norm
    assert _pruned_share(admm, net) < 0.3 * before, (before, _pruned_share(admm, net))


def _pruned_share(admm: Admm, net: nn.Module) -> float:
    """||W - Pi(W)|| / ||W|| of the middle conv: what hard pruning would take away now."""
    masks = hard_prune_masks(admm.graph, admm.spec)
    w = net[3].weight.detach()
    return float((w * (1 - masks["3.weight"])).norm() / w.norm())


def test_state_round_trips_through_a_checkpoint_dict() -> None:
    net = _net()
    admm = _admm(net)
    admm.update(loss=0.5)
    state = admm.state()
    other = _admm(_net())
    other.load_state(state)
    assert other.iteration == 1 and other.rho == admm.rho and other.log == admm.log
    assert all(torch.equal(other.Z[k], admm.Z[k]) and torch.equal(other.U[k], admm.U[k]) for k in admm.layers)
    assert gemm_view(other.Z["0"]).ne(0).any(1).sum() < 8  # a projected Z, not the weights


def test_settings_are_the_admm_sections_schedule_by_name() -> None:
    admm = AdmmConfig(iterations=7, epochs_per_iteration=2, rho_init=1e-3, rho_max=3.0, lr=0.5)
    expected = AdmmSettings(iterations=7, epochs_per_iteration=2, rho_init=1e-3, rho_max=3.0)
    assert AdmmSettings.from_config(admm) == expected
