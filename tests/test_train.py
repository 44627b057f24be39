"""The training loop: masked retraining never revives a pruned weight, its momentum or decay included."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ac_toolchain.config import TrainConfig
from ac_toolchain.errors import ConfigError
from ac_toolchain.prune.schemes import prune
from ac_toolchain.train import Controller, FitSettings, Precision, fit, make_optimizer, recalibrate_bn, train_step


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
    train = TrainConfig(amp="fp16", sync_bn=True, num_workers=3, pin_memory=True)
    settings = FitSettings.from_config(train, epochs=2, lr=0.01)
    assert (settings.amp, settings.sync_bn, settings.num_workers, settings.pin_memory) == ("fp16", True, 3, True)


@pytest.mark.parametrize(("option", "needle"), [({"amp": "bf16"}, "train.amp = bf16"),
                                                ({"amp": "fp16"}, "train.amp = fp16"),
                                                ({"sync_bn": True}, "SyncBatchNorm runs on GPUs only"),
                                                ({"pin_memory": True}, "train.pin_memory")])  # fmt: skip
def test_cuda_only_training_options_are_a_config_error_on_cpu_before_a_step(option: dict, needle: str) -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as err:
        fit(net, _data(), FitSettings(1, 0.1, 16, **option), torch.device("cpu"))
    assert "device is cpu" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # not one step taken


def test_the_cli_refuses_amp_on_cpu_before_any_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ac_toolchain.cli import main

    runs = f"{tmp_path}/runs"
    out = CliRunner().invoke(main, ["compress", "lenet5", "--preset", "smoke", "--device", "cpu", "--train-amp",
                                    "bf16", "--runs-dir", runs])  # fmt: skip
    assert out.exit_code == 2 and "train.amp = bf16" in out.output, out.output
    assert not (tmp_path / "runs").exists()


class GradNorms(Controller):
    """Records the gradient norm the controllers see before the optimiser step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def before_step(self, model: nn.Module) -> None:
        self.norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_a_mixed_precision_step_is_the_float32_step_within_its_rounding(mode: str) -> None:
    """The step's code on CPU autocast (train.amp itself is CUDA only): the same update as float32 up to bf16 /
    fp16 rounding, and with fp16's gradient scaler the controllers see unscaled gradients."""
    data = _data()
    x, y = data.tensors[0][:32], data.tensors[1][:32]
    runs = {}
    for name, precision in (("off", None), (mode, Precision(mode, "cpu"))):
        net, seen = _net().train(), GradNorms()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loss = train_step(net, x, y, opt, [seen], precision=precision)
        runs[name] = (loss, seen.norms[0], [p.detach().clone() for p in net.parameters()])
    (loss32, norm32, params32), (loss, norm, params) = runs["off"], runs[mode]
    assert loss == pytest.approx(loss32, rel=2e-2) and norm == pytest.approx(norm32, rel=5e-2)
    start = list(_net().parameters())
    for p, q, p0 in zip(params, params32, start, strict=True):
        assert not torch.equal(p, p0)  # it stepped (the scaler found no overflow)
        assert torch.allclose(p, q, atol=5e-3, rtol=0)
    assert (Precision(mode, "cpu").scaler is not None) == (mode == "fp16")


def test_loader_workers_leave_the_training_unchanged() -> None:
    """train.num_workers loads the same batches in the same order: the same weights, bit for bit."""
    nets = [_net(), _net()]
    for net, workers in zip(nets, (0, 1), strict=True):
        fit(net, _data(), FitSettings(1, 0.1, 16, num_workers=workers), torch.device("cpu"))
    first, second = (net.state_dict() for net in nets)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(nets[0][0].weight, _net()[0].weight)


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
