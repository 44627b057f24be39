"""Early stopping on a validation plateau: the epoch it stops at, that a rise within the split's noise is not a new
best, the weights it keeps (the last epoch's), and that a training cut off and resumed from its checkpoint ends
exactly where an uninterrupted one ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ac_toolchain.plateau import Plateau, noise
from ac_toolchain.runs import latest_checkpoint, save_checkpoint
from ac_toolchain.train import FitSettings, evaluate, fit, make_loader

CPU = torch.device("cpu")


class _Killed(Exception):
    pass


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))


def _scores(values: list[float]) -> Any:
    it: Iterator[float] = iter(values)
    return lambda model: next(it)


def _snapshots() -> tuple[dict[int, dict[str, torch.Tensor]], Any]:
    """The model state fit hands to ``on_epoch_end`` (what a checkpoint saves), by epoch."""
    saved: dict[int, dict[str, torch.Tensor]] = {}

    def keep(epoch: int, state: dict[str, Any]) -> None:
        saved[epoch] = {k: v.detach().clone() for k, v in state["model"].items()}

    return saved, keep


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stops_after_patience_epochs_without_a_new_best_and_keeps_the_last_epochs_weights() -> None:
    net, (saved, keep) = _net(), _snapshots()
    plateau = Plateau(_scores([0.5, 0.7, 0.6, 0.7, 0.69, 0.99, 0.99]), patience=3)  # a tie is not a new best
    losses = fit(net, _data(96, 0), FitSettings(10, 0.1, 16), CPU, controllers=[plateau], on_epoch_end=keep)
    assert len(losses) == 5 and sorted(saved) == [1, 2, 3, 4, 5]  # epochs 3, 4, 5 without a new best: stop
    assert (plateau.epoch, plateau.best_epoch, plateau.best_score) == (5, 2, 0.7)
    assert plateau.history == [0.5, 0.7, 0.6, 0.7, 0.69]
    assert _same(net.state_dict(), saved[5]) and not _same(saved[5], saved[2])  # the last epoch, not the best


def test_a_rise_within_the_splits_binomial_noise_is_not_a_new_best() -> None:
    assert noise(0.7, 100) == pytest.approx((0.7 * 0.3 / 100) ** 0.5)  # 4.6 points on 100 images
    scores = [0.5, 0.7, 0.72, 0.73, 0.80]
    on_100 = Plateau(_scores(scores), patience=2, images=100)
    assert len(fit(_net(), _data(96, 0), FitSettings(5, 0.1, 16), CPU, controllers=[on_100])) == 4
    assert (on_100.best_epoch, on_100.best_score) == (2, 0.7)  # +2 and +3 points are noise on 100 images
    exact = Plateau(_scores(scores), patience=2)  # no split size: any rise is a new best
    assert len(fit(_net(), _data(96, 0), FitSettings(5, 0.1, 16), CPU, controllers=[exact])) == 5
    assert (exact.best_epoch, exact.best_score) == (5, 0.80)


@pytest.mark.parametrize(("patience", "scores", "best"), [(0, [0.5, 0.9, 0.1, 0.2, 0.3, 0.4], 2),
                                                            (2, [None] * 6, 6)])  # fmt: skip
def test_patience_0_or_no_validation_trains_every_epoch(patience: int, scores: list[Any], best: int) -> None:
    net, (saved, keep) = _net(), _snapshots()
    plateau = Plateau(_scores(scores), patience=patience)
    assert len(fit(net, _data(96, 0), FitSettings(6, 0.1, 16), CPU, controllers=[plateau], on_epoch_end=keep)) == 6
    assert plateau.best_epoch == best and _same(net.state_dict(), saved[6])  # the last epoch is kept


def _train(run_dir: Path, cut_after: int | None = None) -> tuple[Plateau, dict[str, torch.Tensor], int]:
    """Train with a checkpoint per epoch (continuing from the newest); ``cut_after``: raise once that epoch's
    checkpoint is written, as a kill would. Returns the plateau, the kept weights and the epochs this call ran."""
    val = make_loader(_data(64, 1), 256, shuffle=False)
    plateau = Plateau(lambda m: evaluate(m, val, CPU, label=""), patience=2)
    net = _net()

    def checkpoint(epoch: int, state: dict[str, Any]) -> None:
        save_checkpoint(run_dir, "dense", epoch, state)
        if epoch == cut_after:
            raise _Killed

    ran = fit(net, _data(96, 0), FitSettings(30, 0.2, 16), CPU, seed=3, controllers=[plateau],
              resume=latest_checkpoint(run_dir, "dense"), on_epoch_end=checkpoint)  # fmt: skip
    return plateau, net.state_dict(), len(ran)


def test_a_training_cut_off_after_its_best_epoch_and_resumed_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, weights, _ = _train(tmp_path / "whole")
    best, stop = whole.best_epoch, whole.epoch
    assert best > 1 and stop == best + 2 < 30  # it plateaued before the cap
    cut = best + 1  # after the best epoch, before the stop: the plateau's state lives in the checkpoint
    with pytest.raises(_Killed):
        _train(tmp_path / "cut", cut_after=cut)
    resumed, again, ran = _train(tmp_path / "cut")
    assert ran == stop - cut  # continued after the cut, not from the start
    assert (resumed.epoch, resumed.best_epoch, resumed.history) == (stop, best, whole.history)
    assert _same(again, weights)
    assert _train(tmp_path / "cut")[2] == 0  # resumed at the stopping epoch: nothing more to train
