"""Torch-Pruning peer: prune a model to a target params ratio with Torch-Pruning's group-norm magnitude pruner.

This exists only for benchmarks that compare AutoCompress with an established structured pruner at the same
compression. ``torch-pruning`` is an optional extra, not a dependency of the toolchain
(``pip install torch-pruning==1.6.1``); nothing in ``ac_toolchain`` imports this module.

:func:`prune_to_params_ratio` runs Torch-Pruning one-shot (``tp.pruner.BasePruner``, which 1.6 also exports under
its old name ``MetaPruner``, with ``tp.importance.GroupMagnitudeImportance(p=2)``: the group L2 norm) and bisects
its ``pruning_ratio`` so that the physically smaller model has ``dense params / ratio`` parameters. The final
``nn.Linear`` (the classifier) keeps its outputs. Two modes:

* ``"uniform"``: the same channel pruning ratio in every group;
* ``"global"``: ``global_pruning=True``, one importance ranking over all groups.

Torch-Pruning refuses to prune a group that would lose all its channels and then leaves it dense, so without a
guard the params count jumps back up at high ratios. Its ``max_pruning_ratio`` floor only acts between iterative
steps, so in one shot the guard is: "uniform" caps each group's ratio (``pruning_ratio_dict``) so that it keeps
at least one channel, "global" ranks each group's most important channel above every other (a wrapper around
the importance). A layer thus never vanishes; when the ratio still cannot be reached, ValueError says so.

:func:`macs` counts multiply-accumulates as ``ac_toolchain.count`` does: weight elements x output positions of
every conv and linear layer, per sample, bias excluded.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn

try:
    import torch_pruning as tp
except ModuleNotFoundError as e:  # optional extra
    raise ModuleNotFoundError("benchmarks.peer_torch_pruning needs torch-pruning: pip install torch-pruning") from e

MODES = ("uniform", "global")
MAX_PRUNING_RATIO = 0.995  # highest channel pruning ratio tried (and tp's max_pruning_ratio)
# coarse scan of pruning_ratio (finer near the top, where the params count changes fastest), then bisection
SCAN = [i / 20 for i in range(1, 19)] + [0.92, 0.94, 0.96, 0.97, 0.98, 0.99, MAX_PRUNING_RATIO]
BISECT_STEPS = 10  # halves the last scan interval (<= 0.05) ten times: pruning_ratio to 5e-5
CHECK_BATCH = 4


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates per sample of the conv and linear layers for `example` (weight elements x output
    positions; biases, BN, activations and pools are not counted). Runs one eval-mode forward."""
    total = [0]

    def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        weight: torch.Tensor = mod.weight  # type: ignore[assignment]
        positions = math.prod(out.shape[2:]) if isinstance(mod, nn.Conv2d) else math.prod(out.shape[1:-1])
        total[0] += weight.numel() * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example[:1])  # eval: counting must not update BN running stats
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


def _classifier(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear classifier to keep")
    return linears[-1]


def _group_cap(channels: int) -> float:
    """Highest pruning ratio that leaves a layer of `channels` outputs at least one (tp keeps
    int(channels * (1 - ratio)))."""
    return max(0.0, min(MAX_PRUNING_RATIO, 1.0 - 1.5 / channels))


def _uniform_ratios(model: nn.Module, ratio: float, keep: nn.Module) -> dict[nn.Module, float]:
    """`ratio` for every conv/linear layer, capped so that none loses all its outputs."""
    out: dict[nn.Module, float] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out[m] = min(ratio, _group_cap(m.out_channels))
        elif isinstance(m, nn.Linear) and m is not keep:
            out[m] = min(ratio, _group_cap(m.out_features))
    return out


class KeepBestImportance(tp.importance.Importance):
    """Wraps an importance so that each group's most important channel ranks above all others: global
    thresholding then never takes a whole group (which tp would refuse, leaving that group dense)."""

    def __init__(self, base: tp.importance.Importance) -> None:
        self.base = base

    def __call__(self, group: object) -> torch.Tensor | None:
        imp: torch.Tensor | None = self.base(group)
        if imp is None or imp.numel() == 0:
            return imp
        imp = imp.clone()
        imp[imp.argmax()] = math.inf
        return imp


def _prune_once(model: nn.Module, example: torch.Tensor, pruning_ratio: float, mode: str) -> nn.Module:
    """A pruned deep copy of `model`: one Torch-Pruning step at `pruning_ratio`."""
    pruned = copy.deepcopy(model).eval()  # eval: tracing must not update BN running stats
    keep = _classifier(pruned)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    uniform = mode == "uniform"
    pruner = tp.pruner.BasePruner(
        pruned,
        example[:1],
        importance=importance if uniform else KeepBestImportance(importance),
        global_pruning=not uniform,
        pruning_ratio=pruning_ratio,
        pruning_ratio_dict=_uniform_ratios(pruned, pruning_ratio, keep) if uniform else None,
        max_pruning_ratio=MAX_PRUNING_RATIO,
        iterative_steps=1,
        ignored_layers=[keep],
    )
    pruner.step()
    return pruned


def _bisect(
    model: nn.Module, example: torch.Tensor, target: int, mode: str, lo: float, hi: float, best: nn.Module
) -> nn.Module:
    """Smallest pruning_ratio in (lo, hi] whose model has at most `target` params (hi's model is `best`)."""
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) / 2
        candidate = _prune_once(model, example, mid, mode)
        if params(candidate) <= target:
            hi, best = mid, candidate
        else:
            lo = mid
    return best


def _scan(model: nn.Module, example: torch.Tensor, mode: str) -> Iterator[tuple[float, nn.Module]]:
    for p in SCAN:
        yield p, _prune_once(model, example, p, mode)


def _check_runs(model: nn.Module, example: torch.Tensor, dense_shape: torch.Size) -> None:
    with torch.no_grad():
        for x in (example, example[:1].expand(CHECK_BATCH, *example.shape[1:])):
            out = model(x)
            want = (x.shape[0], *dense_shape[1:])
            if tuple(out.shape) != want:
                raise RuntimeError(f"pruned model returns {tuple(out.shape)} for a batch of {x.shape[0]}, want {want}")


def prune_to_params_ratio(model: nn.Module, example: torch.Tensor, ratio: float, mode: str) -> tuple[nn.Module, float]:
    """Prune a copy of `model` with Torch-Pruning's group L2-norm magnitude pruner (one shot) to
    ``dense params / ratio`` parameters: the smallest pruning_ratio whose model has at most that many.

    `mode` is "uniform" (same ratio in every layer) or "global" (one ranking over all layers). The final nn.Linear
    keeps its outputs. `model` is left unchanged. Returns the physically smaller model (in `model`'s train/eval
    mode) and its achieved params ratio (dense params / pruned params, >= `ratio`). Raises ValueError when the
    ratio cannot be reached.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not ratio >= 1.0:
        raise ValueError(f"params ratio must be >= 1, got {ratio}")
    dense = params(model)
    target = math.floor(dense / ratio)
    was_training = model.training
    try:
        with torch.no_grad():
            dense_shape = model.eval()(example).shape
    finally:
        model.train(was_training)
    if target >= dense:  # ratio 1: nothing to prune
        return copy.deepcopy(model), 1.0
    lo, best_seen = 0.0, dense
    for p, pruned in _scan(model, example, mode):
        n = params(pruned)
        if n <= target:
            result = _bisect(model, example, target, mode, lo, p, pruned)
            break
        lo, best_seen = p, min(best_seen, n)
    else:
        raise ValueError(
            f"Torch-Pruning ({mode}) cannot reach params ratio {ratio:g}: at most {dense / best_seen:.2f}x "
            f"({best_seen} of {dense} params) with pruning_ratio up to {MAX_PRUNING_RATIO}"
        )
    _check_runs(result, example, dense_shape)
    result.train(was_training)
    return result, dense / params(result)
