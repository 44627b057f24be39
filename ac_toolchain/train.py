"""Train and evaluate loops: SGD with momentum and cosine decay, rich progress bars, training controllers.

:func:`fit` is the one training loop. What pruning adds to it comes in as *controllers*
(:class:`Controller`): an extra loss term (ADMM's penalty), work before and after each optimiser step (masks),
work at the end of each epoch (ADMM's Z- and U-steps) and state for the checkpoint. :class:`MaskController`
zeroes the gradients of pruned weights before each step and the weights after it, so pruned weights stay
exactly zero through momentum and weight decay, and their momentum buffers stay zero too. The loss is a
*criterion* (:class:`Criterion`): cross-entropy, or distillation from the dense model (ac_toolchain/distill.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ac_toolchain import distributed
from ac_toolchain.config import TrainConfig
from ac_toolchain.errors import ConfigError
from ac_toolchain.prune.schemes import Masks, apply_masks

EpochHook = Callable[[int, dict[str, Any]], None]


class Criterion(Protocol):
    """A training loss: ``(logits, inputs, labels) -> (loss to minimise, task loss to log)``."""

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The default criterion: cross-entropy to the labels, minimised and logged."""
    task = nn.functional.cross_entropy(logits, y)
    return task, task


class Controller:
    """Hooks into :func:`fit`; every method is a no-op unless overridden."""

    name = "controller"

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def before_step(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass

    def end_epoch(self, epoch: int, model: nn.Module, loss: float) -> None:
        pass

    def stop(self) -> bool:
        """True ends the training before its next epoch (early stopping: :class:`ac_toolchain.plateau.Plateau`)."""
        return False

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class MaskController(Controller):
    """Keeps pruned weights at zero: gradients masked before the step, weights masked after it."""

    name = "masks"

    def __init__(self, masks: Masks) -> None:
        self.masks = masks
        self._params: dict[str, nn.Parameter] = {}

    def _bound(self, model: nn.Module) -> dict[str, nn.Parameter]:
        if not self._params:
            self._params = dict(model.named_parameters())
        return self._params

    def before_step(self, model: nn.Module) -> None:
        params = self._bound(model)
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask.to(grad.device, grad.dtype))

    def after_step(self, model: nn.Module) -> None:
        apply_masks(model, self.masks)


@dataclass
class FitSettings:
    """What one call of :func:`fit` needs; built from the config with :meth:`from_config`."""

    epochs: int
    lr: float
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_batches: int = 0
    amp: str = "off"  # train.amp: off, bf16 or fp16 (CUDA only)
    sync_bn: bool = False  # train.sync_bn: SyncBatchNorm under a process group (CUDA only)
    num_workers: int = 0  # train.num_workers: the training loader's worker processes
    pin_memory: bool = False  # train.pin_memory: page-locked training batches (CUDA only)

    @classmethod
    def from_config(cls, train: TrainConfig, epochs: int, lr: float) -> FitSettings:
        """The ``[train]`` section's optimiser and loader knobs, by name; ``epochs`` and ``lr`` say which training
        this is (dense: ``train.epochs`` / ``train.lr``; ADMM: its epochs / ``admm.lr``; retraining:
        ``prune.finetune_*``)."""
        return cls(epochs=epochs, lr=lr, batch_size=train.batch_size, momentum=train.momentum,
                   weight_decay=train.weight_decay, max_batches=train.max_batches, amp=train.amp,
                   sync_bn=train.sync_bn, num_workers=train.num_workers, pin_memory=train.pin_memory)  # fmt: skip


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_device_options(train: TrainConfig | FitSettings, device: torch.device) -> None:
    """``train.amp``, ``train.sync_bn`` and ``train.pin_memory`` do something on CUDA only: asked for on another
    device, they are a ConfigError (the CLI checks before any work; :func:`fit` again before training)."""
    if device.type == "cuda":
        return
    wrong = [f"train.amp = {train.amp} (--train-amp off)"] if train.amp != "off" else []
    wrong += ["train.sync_bn = true (torch's SyncBatchNorm runs on GPUs only)"] if train.sync_bn else []
    wrong += ["train.pin_memory = true"] if train.pin_memory else []
    if wrong:
        raise ConfigError(f"{'; '.join(wrong)}: CUDA only, but the device is {device.type}; turn "
                          f"{'it' if len(wrong) == 1 else 'them'} off or use --device cuda")  # fmt: skip


class Precision:
    """``train.amp`` in the training step: autocast to bf16 or fp16 around the forward pass and the loss, and for
    fp16 a GradScaler (small fp16 gradients underflow to zero without it). ``off`` adds nothing to the step.

    Refused on CPU by :func:`check_device_options`; the class itself takes any device type torch's autocast
    does, which lets the tests run the step's code on CPU."""

    def __init__(self, mode: str, device_type: str) -> None:
        if mode != "off" and mode not in AMP_DTYPES:
            raise ConfigError(f"train.amp = {mode!r}: use off, bf16 or fp16")
        self.mode, self.device_type = mode, device_type
        self.scaler = torch.amp.GradScaler(device_type) if mode == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        if self.mode == "off":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.mode])


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_loader(ds: Dataset[Any], batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0,
                pin: bool = False) -> DataLoader[Any]:  # fmt: skip
    """The loader of ``ds``; shuffled by a generator seeded ``seed`` (the order is drawn in this process, so it
    does not depend on ``workers``, the worker processes that load the batches)."""
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers,
                      pin_memory=pin)  # fmt: skip


class _Indices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class RankBatches(Sampler[list[int]]):
    """This rank's share (images ``rank, rank + ranks, ...``) of every batch the single process draws in epoch
    ``set_epoch(e)``: the same seeded loader, replayed over indices, so the ranks together train on the single
    process's batches. A last batch smaller than the ranks is dropped (no rank may get an empty share)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, ranks: int) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.ranks = n, batch_size, seed, rank, ranks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in make_loader(_Indices(self.n), self.batch_size, shuffle=True, seed=self.seed + self.epoch):
            if len(batch) >= self.ranks:
                yield batch[self.rank :: self.ranks].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + int(rest >= self.ranks)

    def weight(self, size: int, index: int) -> float:
        """The factor on this rank's mean loss of batch ``index`` (``size`` images) that makes DDP's average of
        the ranks' gradients the gradient of the global batch's mean loss (1 when the shares are equal)."""
        total = min(self.batch_size, self.n - index * self.batch_size)
        return self.ranks * size / total


def train_loader(ds: Dataset[Any], batch_size: int, seed: int, epoch: int, workers: int = 0,
                 pin: bool = False) -> DataLoader[Any]:  # fmt: skip
    """The epoch's shuffled loader, seeded ``seed + epoch``; under torchrun this rank's share of each of its
    batches (:class:`RankBatches`). ``workers`` and ``pin``: ``train.num_workers``, ``train.pin_memory``."""
    if not distributed.active():
        return make_loader(ds, batch_size, shuffle=True, seed=seed + epoch, workers=workers, pin=pin)
    batches = RankBatches(len(ds), batch_size, seed, distributed.rank(), distributed.world())  # type: ignore[arg-type]
    batches.set_epoch(epoch)
    return DataLoader(ds, batch_sampler=batches, num_workers=workers, pin_memory=pin)


def shard(loader: DataLoader[Any]) -> DataLoader[Any]:
    """Under torchrun: this rank's images ``rank, rank + ranks, ...`` of an evaluation loader, same batch size."""
    if not distributed.active():
        return loader
    ds: Any = loader.dataset
    return DataLoader(Subset(ds, range(distributed.rank(), len(ds), distributed.world())),
                      batch_size=loader.batch_size)  # fmt: skip


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True, disable=not distributed.is_main(),
    )  # fmt: skip


def _batches(loader: DataLoader[Any], max_batches: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            return
        yield batch


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               controllers: list[Controller], criterion: Criterion = cross_entropy,
               weight: float = 1.0, precision: Precision | None = None) -> float:  # fmt: skip
    """One optimiser step; returns the criterion's task loss (cross-entropy to the labels, without the
    distillation term or the controllers' terms). ``model`` may be wrapped in DistributedDataParallel: it runs the
    forward pass, the controllers see the model inside; ``weight`` scales the criterion's loss (a rank's share
    of an uneven batch, :meth:`RankBatches.weight`). ``precision`` (``train.amp``) autocasts the forward pass
    and the criterion; the controllers' terms (ADMM's penalty) stay in float32, and with fp16's scaler the
    controllers see the unscaled gradients."""
    with precision.autocast() if precision is not None else nullcontext():
        loss, task = criterion(model(x), x, y)
    loss = loss * weight if weight != 1.0 else loss
    inner = distributed.unwrap(model)
    for c in controllers:
        extra = c.extra_loss(inner)
        loss = loss + extra if extra is not None else loss
    opt.zero_grad(set_to_none=True)
    scaler = precision.scaler if precision is not None else None
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    for c in controllers:
        c.before_step(inner)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)  # skipped when a gradient overflowed; the scale then shrinks
        scaler.update()
    for c in controllers:
        c.after_step(inner)
    return float(task.item())


def train_one_epoch(
    model: nn.Module, loader: DataLoader[Any], opt: torch.optim.Optimizer, device: torch.device,
    controllers: list[Controller] | None = None, max_batches: int = 0, label: str = "train",
    criterion: Criterion = cross_entropy, precision: Precision | None = None,
) -> float:  # fmt: skip
    """One pass over loader; returns the mean task loss."""
    model.train()
    total, seen = 0.0, 0
    n = min(len(loader), max_batches) if max_batches else len(loader)
    with _progress() as bar:
        task = bar.add_task(label, total=n, info="")
        shares = loader.batch_sampler if isinstance(loader.batch_sampler, RankBatches) else None
        for i, (x, y) in enumerate(_batches(loader, max_batches)):
            weight = shares.weight(len(y), i) if shares is not None else 1.0
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = train_step(model, x, y, opt, controllers or [], criterion, weight, precision)
            total, seen = total + loss * len(y), seen + len(y)
            bar.update(task, advance=1, info=f"loss {total / seen:.3f}")
    summed, images = distributed.sum_all(total, seen)  # every rank logs the mean over all ranks' images
    return summed / max(images, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[Any], device: torch.device, label: str = "eval") -> float:
    """Top-1 accuracy in [0, 1] over the whole loader (eval mode); under torchrun each rank scores its share
    (:func:`shard`) and the counts are summed, so every rank returns the same accuracy."""
    model.eval()
    loader = shard(loader)
    correct, seen = 0, 0
    with _progress() if label else nullcontext() as bar, torch.no_grad():
        task = bar.add_task(label, total=len(loader), info="") if bar else None
        for x, y in loader:
            pred = model(x.to(device)).argmax(dim=1).cpu()
            correct, seen = correct + int((pred == y).sum()), seen + len(y)
            if bar is not None and task is not None:
                bar.update(task, advance=1, info=f"top-1 {correct / seen:.2%}")
    right, images = distributed.sum_all(correct, seen)
    return right / max(images, 1)


@torch.no_grad()
def correct_per_image(model: nn.Module, loader: DataLoader[Any], device: torch.device) -> torch.Tensor:
    """[N] bool in the loader's order: which images the model's top-1 gets right (eval mode, quiet). Two models
    scored on the same unshuffled loader can be compared image by image (``purify.criterion = paired``)."""
    model.eval()
    hits = [model(x.to(device)).argmax(dim=1).cpu() == y for x, y in shard(loader)]
    mine = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    if not distributed.active():
        return mine
    parts = distributed.gather(mine)  # rank r scored images r, r + ranks, ...: interleave them back
    out = torch.zeros(sum(len(p) for p in parts), dtype=torch.bool)
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


def make_optimizer(model: nn.Module, s: FitSettings) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(s.epochs, 1))
    return opt, sched


def fit(
    model: nn.Module, train_ds: Dataset[Any], s: FitSettings, device: torch.device, *, seed: int = 0,
    masks: Masks | None = None, controllers: list[Controller] | None = None, resume: dict[str, Any] | None = None,
    on_epoch_end: EpochHook | None = None, label: str = "train", criterion: Criterion = cross_entropy,
) -> list[float]:  # fmt: skip
    """Train for ``s.epochs`` (fewer when a controller says :meth:`Controller.stop`); ``resume`` (a checkpoint
    dict) continues after its epoch.

    ``masks`` is shorthand for a :class:`MaskController`; ``criterion`` replaces plain cross-entropy (e.g.
    :class:`~ac_toolchain.distill.Distillation`). ``on_epoch_end(epoch, state)`` receives the state to
    checkpoint: model, optimizer, scheduler and each controller's state (after its ``end_epoch``), the fp16
    gradient scaler's with ``s.amp = fp16``, and under torchrun the launch's id (:func:`distributed.earlier_run`
    finds the run directory by it after torchrun restarted the group).
    """
    check_device_options(s, device)
    hooks = [*([MaskController(masks)] if masks else []), *(controllers or [])]
    model.to(device)
    opt, sched = make_optimizer(model, s)
    precision = Precision(s.amp, device.type) if s.amp != "off" else None
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if precision is not None and precision.scaler is not None and "scaler" in resume:
            precision.scaler.load_state_dict(resume["scaler"])
        for c in hooks:
            c.load_state(resume.get("controllers", {}).get(c.name, {}))
        start = int(resume["epoch"])
    for c in hooks:
        c.after_step(model)  # masks hold from the first step on
    losses: list[float] = []
    with distributed.sync_batchnorm(model, s.sync_bn):
        net = distributed.wrap(model, device)  # under torchrun: gradients averaged over the ranks
        for epoch in range(start + 1, s.epochs + 1):
            if any(c.stop() for c in hooks):  # checked first: a resumed training may already be done
                break
            loader = train_loader(train_ds, s.batch_size, seed, epoch, s.num_workers, s.pin_memory)
            tag = f"{label} {epoch}/{s.epochs}"
            losses.append(train_one_epoch(net, loader, opt, device, hooks, s.max_batches, tag, criterion, precision))
            distributed.broadcast_buffers(model)  # every rank ends the epoch with rank 0's BatchNorm statistics
            sched.step()
            for c in hooks:
                c.end_epoch(epoch, model, losses[-1])
            if on_epoch_end is not None:
                on_epoch_end(epoch, _checkpoint(model, opt, sched, hooks, precision))
    return losses


def _checkpoint(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, hooks: list[Controller],
                precision: Precision | None) -> dict[str, Any]:  # fmt: skip
    """What :func:`fit` hands ``on_epoch_end`` to checkpoint."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "controllers": {c.name: c.state() for c in hooks},
    }
    if precision is not None and precision.scaler is not None:
        state["scaler"] = precision.scaler.state_dict()
    if distributed.launched():
        state["launch"] = distributed.launch_id()
    return state


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader[Any], device: torch.device, batches: int) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` training batches (cumulative mean).

    After structures are removed the stored statistics describe the old activations; a few batches fix that.
    Under torchrun the batches are spread over the ranks: in training mode each batch is normalised with its own
    statistics, so a batch's contribution does not depend on where it ran, and the mean of the ranks' means,
    weighted by their batch counts, is the single process's mean up to the order of the sums.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches seen
    ranks, me = distributed.world(), distributed.rank() if distributed.active() else 0
    mine = 0  # under torchrun rank r runs batches r, r + ranks, ...; the ranks' averages are then averaged
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(_batches(loader, batches)):
            if i % ranks == me:
                model(x.to(device))
                mine += 1
    distributed.mean_running_stats(bns, mine)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()
