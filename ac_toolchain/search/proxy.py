"""Quick evaluation of a proposal: project the current model to it in one shot, re-estimate the BatchNorm
statistics on a few training batches, take top-1 on the validation split.

The model is copied once; every proposal starts from the same weights, the same BN batches (a seeded
loader) and the same validation images, so a proposal scores the same every time (and after a resume).
Scores are cached by the proposal's spec.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ac_toolchain.config import SearchConfig
from ac_toolchain.errors import ConfigError
from ac_toolchain.prune.schemes import Masks, apply_masks
from ac_toolchain.prune.spec import Spec, spec_to_json
from ac_toolchain.train import evaluate, make_loader, recalibrate_bn


@dataclass(frozen=True)
class ProxySettings:
    """What a proposal's quick evaluation uses (``search.bn_batches``, ``search.val_images``, the training batch
    size and the run's seed)."""

    bn_batches: int
    batch_size: int
    seed: int
    val_images: int = 0  # 0: the whole validation split

    @classmethod
    def from_config(cls, search: SearchConfig, batch_size: int, seed: int) -> ProxySettings:
        """The ``[search]`` section's proxy knobs, by name, with the training batch size and the run's seed."""
        return cls(bn_batches=search.bn_batches, batch_size=batch_size, seed=seed, val_images=search.val_images)


class Proxy:
    """``proxy(spec) -> accuracy in [0, 1]`` for specs whose masks ``masks_of(spec)`` gives."""

    def __init__(self, model: nn.Module, masks_of: Callable[[Spec], Masks], train: Dataset[Any],
                 val: Dataset[Any], device: torch.device, settings: ProxySettings) -> None:  # fmt: skip
        if len(val) == 0:  # type: ignore[arg-type]
            raise ConfigError("the search scores proposals on the validation split, which is empty: raise "
                              "--data-val-fraction")  # fmt: skip
        self.net = copy.deepcopy(model).to(device).eval()
        self.weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.masks_of, self.device = masks_of, device
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
        loader = make_loader(self.train, self.batch_size, shuffle=True, seed=self.seed)
        recalibrate_bn(self.net, loader, self.device, self.bn_batches)
        return evaluate(self.net, self.val, self.device, label="")

    @property
    def per_minute(self) -> float:
        """Proposals scored per minute (cache hits not counted)."""
        return 60.0 * self.evaluated / self.seconds if self.seconds else 0.0
