"""Quantization-aware fine-tuning of the compact model (``quantize.qat_epochs``).

The model is the one that gets quantized (BN folded, column-pruned convs as plain convs with zero columns). Each
conv and linear trains behind fake quantization as onnxruntime will quantize it: the weights int8, symmetric, one
scale per output channel (``max |w| / 127``); the input int8 per tensor over the running min / max. Gradients pass
the rounding straight through (torch's ``fake_quantize_*``). The zero columns are masks of the training loop, so
the pruned structure stays exactly zero. Afterwards the plain model (trained weights, no fake quantization) is
quantized by onnxruntime as a PTQ model is: the activation ranges are calibrated again, not taken from here.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ac_toolchain.compact import expand_columns
from ac_toolchain.prune.schemes import Masks
from ac_toolchain.quantize.fold import fold_bn
from ac_toolchain.train import FitSettings, fit

QMIN, QMAX = -128, 127  # int8 activations
WMAX = 127  # symmetric int8 weights: [-127, 127]


class RangeFakeQuant(nn.Module):
    """Per-tensor int8 fake quantization over the running (momentum 0.1) min and max of what it saw in training."""

    lo: torch.Tensor
    hi: torch.Tensor
    seen: torch.Tensor

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = torch.aminmax(x.detach())
            m = self.momentum if bool(self.seen) else 1.0
            self.lo.lerp_(lo.clamp(max=0), m)
            self.hi.lerp_(hi.clamp(min=0), m)
            self.seen.fill_(True)
        scale = float((self.hi - self.lo).clamp(min=1e-8)) / (QMAX - QMIN)
        zero = int(max(QMIN, min(QMAX, round(QMIN - float(self.lo) / scale))))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, QMIN, QMAX)


def fake_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` fake-quantized to int8, symmetric, one scale per output channel."""
    scale = (w.detach().abs().flatten(1).amax(1) / WMAX).clamp(min=1e-12)
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -WMAX, WMAX)


class QatLayer(nn.Module):
    """A conv or linear with its input and weight fake-quantized; ``layer`` is trained in place."""

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.layer, self.act = layer, RangeFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self.act(x), fake_weight(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def quantizable(compact_model: nn.Module) -> nn.Module:
    """The model onnxruntime quantizes (:func:`ac_toolchain.quantize.export_fp32` exports it): a copy with BN folded
    and zero columns in place of gathered ones."""
    return fold_bn(expand_columns(copy.deepcopy(compact_model).eval()))


def zero_columns(model: nn.Module) -> Masks:
    """Per conv weight, a mask that is 0 on every column (input channel x tap) that is zero in all filters."""
    return {f"{name}.weight": (m.weight.detach().abs().sum(0, keepdim=True) > 0).expand_as(m.weight).float()
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}  # fmt: skip


def _swap(model: nn.Module, wrap: bool) -> None:
    """Wrap every conv / linear in a :class:`QatLayer`, or put the trained layers back."""
    for name, child in list(model.named_children()):
        if wrap and isinstance(child, nn.Conv2d | nn.Linear):
            setattr(model, name, QatLayer(child))
        elif not wrap and isinstance(child, QatLayer):
            setattr(model, name, child.layer)
        else:
            _swap(child, wrap)


def qat(compact_model: nn.Module, train: Dataset[Any], settings: FitSettings, device: torch.device,
        seed: int = 0) -> nn.Module:  # fmt: skip
    """The quantizable form of ``compact_model`` fine-tuned for ``settings.epochs`` behind fake quantization;
    returned as a plain fp32 model (no fake quantization) on the CPU in eval mode."""
    model = quantizable(compact_model)
    masks = zero_columns(model)
    _swap(model, wrap=True)
    masks = {_wrapped(name): mask for name, mask in masks.items()}
    fit(model, train, settings, device, seed=seed, masks=masks, label="qat")
    _swap(model, wrap=False)
    return model.cpu().eval()


def _wrapped(name: str) -> str:
    """A conv weight's parameter name once its conv sits inside a :class:`QatLayer`."""
    module, _, param = name.rpartition(".")
    return f"{module}.layer.{param}"
