"""Quick evaluation of a proposal: project the current model to it in one shot, optionally fine-tune it for a
few masked SGD steps (``search.proxy_steps``), re-estimate the BatchNorm statistics on a few training batches,
take top-1 on the validation split.

The model is copied once; every proposal starts from the same weights, the same fine-tune and BN batches
(seeded loaders), the same RNG state (dropout) and the same validation images, so a proposal scores the same
every time (and after a resume). Scores are cached by the proposal's spec.

BN statistics are re-estimated after the fine-tune, not before it: the steps run in training mode, which
normalises with batch statistics, so statistics estimated before them would only describe weights that the
steps then changed.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ac_toolchain import distributed
from ac_toolchain.compact import shrink
from ac_toolchain.config import SearchConfig, TrainConfig
from ac_toolchain.errors import ConfigError
from ac_toolchain.prune.schemes import Masks, apply_masks
from ac_toolchain.prune.spec import Spec, spec_to_json
from ac_toolchain.train import (
    Controller,
    Criterion,
    MaskController,
    cross_entropy,
    evaluate,
    make_loader,
    recalibrate_bn,
    train_step,
)


@dataclass(frozen=True)
class ProxySettings:
    """What a proposal's quick evaluation uses (``search.bn_batches``, ``search.val_images``,
    ``search.proxy_steps``, the ``[train]`` batch size and optimiser knobs, the fine-tune's lr and the run's
    seed)."""

    bn_batches: int
    batch_size: int
    seed: int
    val_images: int = 0  # 0: the whole validation split
    steps: int = 0  # masked SGD steps before BN re-estimation; 0: none
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4

    @classmethod
    def from_config(cls, search: SearchConfig, train: TrainConfig, lr: float, seed: int) -> ProxySettings:
        """The ``[search]`` section's proxy knobs, by name, with the ``[train]`` batch size, momentum and weight
        decay, the fine-tune's ``lr`` (``prune.finetune_lr``) and the run's seed."""
        return cls(bn_batches=search.bn_batches, batch_size=train.batch_size, seed=seed,
                   val_images=search.val_images, steps=search.proxy_steps, lr=lr, momentum=train.momentum,
                   weight_decay=train.weight_decay)  # fmt: skip


class Proxy:
    """``proxy(spec) -> accuracy in [0, 1]`` for specs whose masks ``masks_of(spec)`` gives; ``criterion`` is the
    fine-tune's loss (distillation, when enabled). With an ``example`` input, each proposal is scored on its
    shrunk model (pruned filters and channels removed; the same score, faster)."""

    def __init__(self, model: nn.Module, masks_of: Callable[[Spec], Masks], train: Dataset[Any],
                 val: Dataset[Any], device: torch.device, settings: ProxySettings,
                 criterion: Criterion = cross_entropy, example: torch.Tensor | None = None) -> None:  # fmt: skip
        if len(val) == 0:  # type: ignore[arg-type]
            raise ConfigError("the search scores proposals on the validation split, which is empty: raise "
                              "--data-val-fraction")  # fmt: skip
        self.net = copy.deepcopy(model).to(device).eval()
        self.weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.masks_of, self.device, self.settings, self.criterion = masks_of, device, settings, criterion
        self.example = example
        self.bn_batches, self.batch_size, self.seed = settings.bn_batches, settings.batch_size, settings.seed
        val_images = settings.val_images
        self.train = train
        n = len(val) if val_images <= 0 else min(val_images, len(val))  # type: ignore[arg-type]
        self.val = make_loader(Subset(val, range(n)), 256, shuffle=False)
        self.cache: dict[str, float] = {}
        self.seconds, self.evaluated = 0.0, 0

    def __call__(self, spec: Spec) -> float:
        key = spec_to_json(spec)
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self._score(self.masks_of(spec))
            self.seconds += time.perf_counter() - start
            self.evaluated += 1
        return self.cache[key]

    def _score(self, masks: Masks) -> float:
        self.net.load_state_dict(self.weights)
        apply_masks(self.net, masks)
        net = self.net
        if self.example is not None:
            small = shrink(self.net, self.example, masks)
            net, masks = small.model, small.cut(masks)
        if self.settings.steps:
            self._fine_tune(net, masks)
        loader = make_loader(self.train, self.batch_size, shuffle=True, seed=self.seed)
        recalibrate_bn(net, loader, self.device, self.bn_batches)
        return evaluate(net, self.val, self.device, label="")

    def _fine_tune(self, net: nn.Module, masks: Masks) -> None:
        """``steps`` masked SGD steps (fresh momentum): pruned weights, their gradients and momentum stay zero.
        Under torchrun each rank takes its share of every batch and DDP averages the gradients: the same steps as
        one process up to the order of the sums, except that BatchNorm normalises each share with its own
        statistics and dropout draws its own masks (SyncBatchNorm, CUDA only, is not used here)."""
        s = self.settings
        opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        keep: list[Controller] = [MaskController(masks)]
        net.train()
        model, ranks = distributed.wrap(net, self.device), distributed.world()
        me = distributed.rank() if distributed.active() else 0
        with _seeded(self.seed, self.device):
            for x, y in self._tune_batches():
                if len(x) < ranks:  # no rank may get an empty share (as train.RankBatches)
                    continue
                share = slice(me, None, ranks)  # this rank's images of the batch; DDP averages the gradients
                weight = ranks * len(x[share]) / len(x)
                train_step(model, x[share].to(self.device), y[share].to(self.device), opt, keep, self.criterion,
                           weight=weight)  # fmt: skip
        net.eval()

    def _tune_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``steps`` batches of shuffled passes seeded ``seed``, ``seed + 1``, ... over the training split."""
        if len(self.train) == 0:  # type: ignore[arg-type]
            return iter(())
        passes = (make_loader(self.train, self.batch_size, shuffle=True, seed=self.seed + e) for e in itertools.count())
        return itertools.islice(itertools.chain.from_iterable(passes), self.settings.steps)

    @property
    def per_minute(self) -> float:
        """Proposals scored per minute (cache hits not counted)."""
        return 60.0 * self.evaluated / self.seconds if self.seconds else 0.0


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG of the CPU and of ``device`` (dropout draws from it) inside the block; the global RNG state
    is restored after it."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
        yield
