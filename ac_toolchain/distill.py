"""Knowledge distillation from the dense model: a training criterion for :func:`ac_toolchain.train.fit`.

``loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
(Hinton et al.; the ``T^2`` keeps the soft term's gradients on the scale of the hard one's). The teacher is a
frozen copy of the dense model (:func:`freeze`): eval mode, so its BatchNorm statistics never move, no
gradients, weights never stepped. The logged task loss stays the cross-entropy to the labels, so losses with
and without distillation compare.

A frozen teacher gives an image the same logits every epoch, so they are cached by the image's bytes (up to
:data:`CACHE_FLOATS` logits): without augmentation, the teacher runs once per training image, not once per
epoch; an augmented image is a new image and runs the teacher. Only CPU batches are cached: on an accelerator
the teacher's pass costs less than copying each batch back to hash it.
"""

from __future__ import annotations

import copy
import hashlib
import time

import torch
from torch import nn
from torch.nn import functional as F

from ac_toolchain.config import DistillConfig


def freeze(model: nn.Module) -> nn.Module:
    """A teacher: a deep copy of ``model`` in eval mode whose parameters need no gradients."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = temperature
    log_s, log_t = F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * (t * t)


CACHE_FLOATS = 50_000_000  # cached teacher logits at most (200 MB of float32)


class Distillation:
    """The criterion ``(logits, x, y) -> (loss, cross-entropy)``; ``seconds`` sums the teacher's forward passes
    (``images``: the images they ran on)."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float) -> None:
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.seconds, self.images = 0.0, 0
        self._cache: dict[bytes, torch.Tensor] = {}
        self._floats = 0

    @classmethod
    def from_config(cls, teacher: nn.Module, d: DistillConfig) -> Distillation:
        return cls(teacher, alpha=d.alpha, temperature=d.temperature)

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = F.cross_entropy(logits, y)
        if self.alpha == 0.0:  # plain cross-entropy, exactly; the teacher is not run
            return task, task
        soft = distillation_loss(logits, self.teacher_logits(x), self.temperature)
        return (1.0 - self.alpha) * task + self.alpha * soft, task

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits on the student's device: cached ones, the others computed (and cached
        while the cache has room)."""
        if x.device.type != "cpu":
            return self._run(x)
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in x.detach().cpu()]
        new = [i for i, k in enumerate(keys) if k not in self._cache]
        fresh = self._run(x[new]) if new else None
        rows = dict(zip(new, fresh, strict=True)) if fresh is not None else {}
        for i in new:
            if self._floats + rows[i].numel() <= CACHE_FLOATS:
                self._cache[keys[i]] = rows[i].cpu()
                self._floats += rows[i].numel()
        out = [rows[i] if i in rows else self._cache[k].to(x.device) for i, k in enumerate(keys)]
        return torch.stack(out)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's forward pass (it follows the student to its device), timed."""
        self._follow(x.device)
        if self.teacher.training:  # whoever switched it to training mode: its BN statistics must not move
            self.teacher.eval()
        _sync(x.device)
        start = time.perf_counter()
        out = self.teacher(x)
        _sync(x.device)
        self.seconds += time.perf_counter() - start
        self.images += len(x)
        return out

    def _follow(self, device: torch.device) -> None:
        first = next(iter(self.teacher.parameters()), None)
        if first is not None and first.device != device:
            self.teacher.to(device)


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that the teacher's seconds are its own (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
