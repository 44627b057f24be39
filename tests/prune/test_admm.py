"""ADMM: the penalty through autograd, Z and U as copies, the Z-step as a projection of W + U, the residual
falling as rho rises on real (tiny) training, and the state surviving a checkpoint."""

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


def test_z_step_projects_w_plus_u_and_u_accumulates_the_gap() -> None:
    net = _net()
    admm = _admm(net)
    gen = torch.Generator().manual_seed(3)
    admm.U = {k: torch.randn(v.shape, generator=gen) for k, v in admm.U.items()}
    w = {k: net.get_submodule(k).weight.detach().clone() for k in admm.layers}
    u_old = {k: v.clone() for k, v in admm.U.items()}
    admm.update()
    masks = hard_prune_masks(admm.graph, admm.spec, {k: w[k] + u_old[k] for k in admm.layers})
    for k in admm.layers:
        z = (w[k] + u_old[k]) * masks[f"{k}.weight"]
        assert torch.allclose(admm.Z[k], z)
        rho_ratio = admm.log[0]["rho"] / admm.rho
        assert torch.allclose(admm.U[k], (u_old[k] + w[k] - z) * rho_ratio, atol=1e-6)


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
