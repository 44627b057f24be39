"""Distillation from the dense model: the loss is the formula, alpha 0 is plain cross-entropy, the teacher stays
frozen through a whole fit()."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ac_toolchain.config import DistillConfig
from ac_toolchain.distill import Distillation, freeze
from ac_toolchain.train import FitSettings, fit

CPU = torch.device("cpu")


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 4))


def _data() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 4, (64,), generator=gen))


def _by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, temp: float) -> torch.Tensor:
    """(1 - a) CE + a T^2 KL(p_t || p_s), spelled out: probabilities and logs, a sum per row, a batch mean."""
    ce = -(s - s.exp().sum(1, keepdim=True).log()).gather(1, y[:, None]).mean()
    p_t = (t / temp).exp() / (t / temp).exp().sum(1, keepdim=True)
    q_s = (s / temp).exp() / (s / temp).exp().sum(1, keepdim=True)
    kl = (p_t * (p_t.log() - q_s.log())).sum(1).mean()
    return (1 - alpha) * ce + alpha * temp * temp * kl


@pytest.mark.parametrize(("alpha", "temp"), [(0.5, 4.0), (1.0, 1.0), (0.3, 2.5), (0.9, 0.5)])
def test_loss_is_the_formula_and_the_task_loss_is_the_cross_entropy(alpha: float, temp: float) -> None:
    teacher = freeze(_net(1))
    x, y = _data().tensors[0][:16], _data().tensors[1][:16]
    logits = _net(2)(x)
    loss, task = Distillation(teacher, alpha, temp)(logits, x, y)
    with torch.no_grad():
        want = _by_hand(logits, teacher(x), y, alpha, temp)
    assert torch.allclose(loss, want, rtol=1e-5, atol=1e-6), (float(loss), float(want))
    assert torch.allclose(task, _by_hand(logits, logits, y, 0.0, 1.0), rtol=1e-6)
    assert loss.requires_grad and not torch.allclose(loss, task)  # the soft term is there and differentiable


def test_alpha_zero_is_plain_cross_entropy_exactly_and_never_runs_the_teacher() -> None:
    class Refuses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the teacher ran")

    x, y = _data().tensors
    logits = _net(2)(x)
    criterion = Distillation(Refuses(), alpha=0.0, temperature=4.0)
    loss, task = criterion(logits, x, y)
    assert torch.equal(loss, nn.functional.cross_entropy(logits, y)) and torch.equal(task, loss)
    assert criterion.seconds == 0.0


def test_teacher_is_frozen_through_fit() -> None:
    dense = _net(0)
    teacher = freeze(dense)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    before = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(dense)
    start = copy.deepcopy(student.state_dict())
    teacher.train()  # even switched to training mode by mistake, its BN statistics must not move
    criterion = Distillation(teacher, alpha=0.7, temperature=3.0)
    fit(student, _data(), FitSettings(2, 0.1, 16), CPU, criterion=criterion)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, running stats, batches tracked
    assert not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())  # the student trained
    assert criterion.seconds > 0
    assert all(p.requires_grad for p in dense.parameters())  # freeze() copies: the dense model is untouched


def _kl(student: nn.Module, teacher: nn.Module, x: torch.Tensor, temp: float) -> float:
    student.eval()
    with torch.no_grad():
        s, t = student(x), teacher(x)
    return float(_by_hand(s, t, torch.zeros(len(x), dtype=torch.long), 1.0, temp))


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    teacher, data = freeze(_net(1)), _data()
    student = _net(2)
    gap = _kl(student, teacher, data.tensors[0], 2.0)
    fit(student, data, FitSettings(3, 0.05, 16), CPU, criterion=Distillation(teacher, 1.0, 2.0))
    assert _kl(student, teacher, data.tensors[0], 2.0) < 0.5 * gap


def test_from_config() -> None:
    teacher = freeze(_net(0))
    d = Distillation.from_config(teacher, DistillConfig(enabled=True, alpha=0.25, temperature=2.0))
    assert (d.teacher, d.alpha, d.temperature) == (teacher, 0.25, 2.0)


def test_teacher_follows_the_students_device() -> None:
    """A teacher on the CPU moves to the student's device on first use; "meta" stands in for an accelerator
    (shapes without data), so this runs on every machine."""
    meta = torch.device("meta")
    teacher = freeze(_net(1))  # on the CPU
    student = _net(2).to(meta)
    x, y = (t.to(meta) for t in _data().tensors)
    loss, task = Distillation(teacher, 0.5, 4.0)(student(x), x, y)
    assert next(teacher.parameters()).device == meta and loss.device == meta and task.device == meta
    assert loss.shape == () and not teacher.training


class Counting(nn.Module):
    """A teacher that counts the images it ran on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.net(x)


def test_the_teacher_runs_once_per_image_and_cached_logits_are_its_logits() -> None:
    teacher = Counting(freeze(_net(1)))
    data = _data()
    criterion = Distillation(teacher, 0.5, 2.0)
    fit(_net(2), data, FitSettings(3, 0.05, 16), CPU, criterion=criterion)  # 3 epochs over 64 images, reshuffled
    assert teacher.seen == criterion.images == 64
    x = data.tensors[0][torch.randperm(64)[:20]]
    with torch.no_grad():
        assert torch.allclose(criterion.teacher_logits(x), teacher.net(x), atol=1e-6)
    assert teacher.seen == 64  # the cached logits ran nothing
    criterion.teacher_logits(x + 0.01)  # a changed (augmented) image is a new image
    assert teacher.seen == criterion.images == 64 + 20
