"""The training loop: masked retraining never revives a pruned weight, its momentum or decay included."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ac_toolchain.config import TrainConfig
from ac_toolchain.prune.schemes import prune
from ac_toolchain.train import FitSettings, fit, make_optimizer, recalibrate_bn


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def _data() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(96, 1, 8, 8, generator=gen), torch.randint(0, 3, (96,), generator=gen))


def test_no_pruned_weight_revives_through_momentum_or_weight_decay(monkeypatch: object) -> None:
    net = _net()
    masks = prune(net, torch.randn(1, 1, 8, 8), 0.5, "filter+column")
    seen: list[torch.optim.Optimizer] = []

    def spy(model: nn.Module, s: FitSettings) -> tuple[torch.optim.Optimizer, object]:
        opt, sched = make_optimizer(model, s)
        seen.append(opt)
        return opt, sched

    import ac_toolchain.train as train

    monkeypatch.setattr(train, "make_optimizer", spy)  # type: ignore[attr-defined]
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    fit(net, _data(), FitSettings(3, 0.1, 16, momentum=0.9, weight_decay=0.05), torch.device("cpu"), masks=masks)
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        assert params[name][mask == 0].abs().max() == 0, name  # exactly zero, not small
        momentum = seen[0].state[params[name]]["momentum_buffer"]
        assert momentum[mask == 0].abs().max() == 0, name  # the buffers never saw a pruned gradient
        assert not torch.equal(params[name][mask == 1], before[name][mask == 1])  # kept weights trained


def test_recalibrated_bn_statistics_are_the_batch_statistics() -> None:
    net = _net()
    data = _data()
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    recalibrate_bn(net, loader, torch.device("cpu"), batches=3)
    with torch.no_grad():
        h = net[0](data.tensors[0])
    bn = net[1]
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert not net.training and bn.momentum == 0.1


def test_settings_are_the_train_sections_knobs_by_name_with_the_stages_epochs_and_lr() -> None:
    train = TrainConfig(epochs=9, lr=0.3, batch_size=8, momentum=0.5, weight_decay=1e-3, max_batches=6)
    settings = FitSettings.from_config(train, epochs=2, lr=0.01)
    assert settings == FitSettings(epochs=2, lr=0.01, batch_size=8, momentum=0.5, weight_decay=1e-3, max_batches=6)


def test_fit_minimises_the_criterions_loss_and_logs_its_task_loss() -> None:
    """A criterion returning (3 CE, CE): plain SGD then steps exactly as CE at three times the lr, and the
    logged losses are the CE of the batches (recomputed by hand from the weights before each step)."""
    data = _data()
    tripled, plain = _net(), _net()

    def criterion(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = nn.functional.cross_entropy(logits, y)
        return 3 * task, task

    settings = FitSettings(1, 0.02, 96, momentum=0.0, weight_decay=0.0)  # one batch: the whole set
    with torch.no_grad():
        want = float(nn.functional.cross_entropy(_net().train()(data.tensors[0]), data.tensors[1]))
    logged = fit(tripled, data, settings, torch.device("cpu"), criterion=criterion)
    fit(plain, data, FitSettings(1, 0.06, 96, momentum=0.0, weight_decay=0.0), torch.device("cpu"))
    assert logged == pytest.approx([want], rel=1e-6)
    for (name, a), b in zip(tripled.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert not torch.equal(tripled[0].weight, _net()[0].weight)  # it did train
