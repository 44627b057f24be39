"""``compact``: a new, physically smaller model with the same outputs as the masked one.

A dependency group is removed when every consumer slice of it (conv input channels, linear input features)
is zero: then nothing downstream reads the channel, so dropping it — with its producers' filters, BN entries
and depthwise filters — changes no output. ``ac.prune`` zeroes whole groups, so its groups always qualify.
After that, a conv whose remaining GEMM matrix still has all-zero columns becomes a ``CompactConv2d`` and a
linear with all-zero input columns a ``GatherLinear``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ac_toolchain.compact.modules import CompactConv2d, GatherLinear
from ac_toolchain.graph import Graph, is_depthwise, one_thread, trace, weight_of
from ac_toolchain.prune.schemes import Masks


@one_thread()
def removable_groups(graph: Graph, masks: Masks | None = None) -> set[int]:
    """Groups no consumer reads: every 'in' slice is zero (frozen groups never qualify). Zero means zero
    weights, or with ``masks`` zero masks (a consumer without a mask reads everything)."""
    gone = set()
    for gid, group in enumerate(graph.groups):
        ins = group.of("in")
        if group.frozen or not ins:
            continue
        if all(_in_slice(graph, p.module, masks)[:, p.index].eq(0).all() for p in ins):
            gone.add(gid)
    return gone


def _in_slice(graph: Graph, module: str, masks: Masks | None) -> torch.Tensor:
    weight = weight_of(graph.module(module)).detach()
    if masks is None:
        return weight
    mask = masks.get(f"{module}.weight")
    return weight.new_ones(()).expand_as(weight) if mask is None else mask


def _no_empty_layers(graph: Graph, gone: set[int]) -> set[int]:
    """Keep one group of any layer that would lose all its inputs or outputs: no zero-width convs.

    Such a group is unread (that is why it was removable), so keeping it changes no output.
    """
    for side in (graph.layer_out, graph.layer_in):
        for ids in side.values():
            if ids and all(g in gone for g in ids):
                gone = gone - {ids[0]}
    return gone


def _kept(ids: list[int], gone: set[int]) -> torch.Tensor:
    return torch.tensor([i for i, g in enumerate(ids) if g not in gone], dtype=torch.long)


def _slice_conv(conv: nn.Conv2d, keep_in: torch.Tensor, keep_out: torch.Tensor, depthwise: bool) -> nn.Conv2d:
    """Kept filters and input columns of a conv. Depthwise: ``keep_in`` are its channels (one group each);
    grouped: ``keep_in`` are the kept columns of its weight, the same in every group, which stay."""
    w = conv.weight.detach()[keep_out]
    w = w if depthwise else w[:, keep_in]
    groups = len(keep_in) if depthwise else conv.groups
    new = nn.Conv2d(
        w.shape[1] * groups, len(keep_out), conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
        groups=groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )  # fmt: skip
    new.weight.data.copy_(w)
    if conv.bias is not None and new.bias is not None:
        new.bias.data.copy_(conv.bias.detach()[keep_out])
    return new


def _slice_bn(bn: nn.BatchNorm2d | nn.BatchNorm1d, keep: torch.Tensor) -> nn.Module:
    new = type(bn)(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    state = {k: v[keep] if v.dim() == 1 else v for k, v in bn.state_dict().items()}
    new.load_state_dict(state)
    return new


def _slice_linear(lin: nn.Linear, keep_in: torch.Tensor, keep_out: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep_in), len(keep_out), bias=lin.bias is not None)
    new.weight.data.copy_(lin.weight.detach()[keep_out][:, keep_in])
    if lin.bias is not None:
        new.bias.data.copy_(lin.bias.detach()[keep_out])
    return new


def _with_columns(mod: nn.Module) -> nn.Module:
    """Gather away all-zero GEMM columns of a dense conv / linear (none zero: the module itself)."""
    if isinstance(mod, nn.Conv2d) and mod.groups == 1 and mod.padding_mode == "zeros":
        keep = mod.weight.detach().reshape(mod.out_channels, -1).ne(0).any(dim=0)
        if isinstance(mod.padding, tuple) and 0 < int(keep.sum()) < keep.numel():
            return CompactConv2d(mod, keep)
    if isinstance(mod, nn.Linear):
        keep = mod.weight.detach().ne(0).any(dim=0)
        if 0 < int(keep.sum()) < keep.numel():
            return GatherLinear(mod, keep)
    return mod


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap a submodule, keeping its train / eval mode (new BN modules start in training mode)."""
    parent, _, child = name.rpartition(".")
    new.train(model.get_submodule(name).training)
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _bn_layers(graph: Graph) -> dict[str, list[int]]:
    """BN module -> group id per channel, from the groups' 'bn' positions."""
    out: dict[str, dict[int, int]] = {}
    for gid, g in enumerate(graph.groups):
        for p in g.of("bn"):
            out.setdefault(p.module, {})[p.index] = gid
    return {name: [m[i] for i in range(len(m))] for name, m in out.items()}


Index = dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]  # tensor name -> kept (rows, cols); None: all


@one_thread()
def _remove_groups(model: nn.Module, graph: Graph, gone: set[int], columns: bool) -> Index:
    """Slice every layer and BN of ``model`` (in place) to the channels of the groups not ``gone``; with
    ``columns``, gather away zero GEMM columns too. Returns the kept indices of each sliced tensor."""
    index: Index = {}
    for name in graph.layers:
        mod = graph.module(name)
        keep_in = _kept(graph.layer_in.get(name, []), gone) if name in graph.layer_in else None
        keep_out = _kept(graph.layer_out.get(name, []), gone) if name in graph.layer_out else None
        if keep_in is None or keep_out is None:
            continue  # a frozen (untracked / grouped) layer keeps its shape
        if isinstance(mod, nn.Conv2d):
            depthwise = is_depthwise(mod)
            new: nn.Module = _slice_conv(mod, keep_in, keep_out, depthwise)
        else:
            assert isinstance(mod, nn.Linear)
            depthwise, new = False, _slice_linear(mod, keep_in, keep_out)
        index[f"{name}.weight"] = (keep_out, None if depthwise else keep_in)
        index[f"{name}.bias"] = (keep_out, None)
        _replace(model, name, _with_columns(new) if columns else new)
    for name, ids in _bn_layers(graph).items():
        bn = model.get_submodule(name)
        assert isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d)
        keep = _kept(ids, gone)
        index.update({f"{name}.{t}": (keep, None) for t in ("weight", "bias", "running_mean", "running_var")})
        _replace(model, name, _slice_bn(bn, keep))
    return index


@one_thread()
def compact(model: nn.Module, example_inputs: torch.Tensor) -> nn.Module:
    """A physically smaller deep copy of ``model`` (eval-mode outputs equal the masked model's)."""
    model = copy.deepcopy(model)
    graph = trace(model, example_inputs)
    _remove_groups(model, graph, _no_empty_layers(graph, removable_groups(graph)), columns=True)
    return model


@dataclass
class Shrunk:
    """A copy of a masked model with the filters and channels of its masked groups removed, for training: convs
    stay plain, so pruned columns stay masked zeros. ``index`` maps each sliced parameter and buffer to its kept
    (rows, cols) in the full model. Its outputs, and the gradients of its weights, equal the masked model's
    (tests/compact/test_shrink.py); :meth:`expand_into` writes it back."""

    model: nn.Module
    index: Index

    def cut(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors of the full model (its masks, its state dict) cut to this model's shapes."""
        return {name: _take(t, *self.index.get(name, (None, None))) for name, t in tensors.items()}

    def expand_into(self, full: nn.Module) -> None:
        """Write this model's parameters and buffers into ``full`` at their kept positions; removed positions
        keep their values (zeros, under the masks)."""
        target = full.state_dict()  # shares storage with full's tensors
        with torch.no_grad():
            for name, value in self.model.state_dict().items():
                _put(target[name], *self.index.get(name, (None, None)), value)

    def expand_masks(self, full: nn.Module, base: Masks, small: Masks) -> Masks:
        """Masks of the full model: ``base`` with this model's masks ``small`` written at their kept positions."""
        params = dict(full.named_parameters())
        out = {name: m.clone() for name, m in base.items()}
        for name, m in small.items():
            target = out.setdefault(name, torch.ones_like(params[name], dtype=m.dtype))
            _put(target, *self.index.get(name, (None, None)), m)
        return out

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def shrink(model: nn.Module, example_inputs: torch.Tensor, masks: Masks) -> Shrunk:
    """The :class:`Shrunk` copy of ``model`` (masks applied) without the groups ``masks`` zero for every
    consumer; on the model's device, in its train / eval mode."""
    small = copy.deepcopy(model)
    device = next(model.parameters()).device
    graph = trace(small, example_inputs.to(device))
    index = _remove_groups(small, graph, _no_empty_layers(graph, removable_groups(graph, masks)), columns=False)
    return Shrunk(small.to(device), index)


def _take(t: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    t = t if rows is None else t.index_select(0, rows.to(t.device))
    return t if cols is None else t.index_select(1, cols.to(t.device))


def _put(t: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None, value: torch.Tensor) -> None:
    value = value.to(t.device, t.dtype)
    if rows is None and cols is None:
        t.copy_(value)
        return
    r = torch.arange(t.shape[0]) if rows is None else rows
    if cols is None:
        t[r.to(t.device)] = value
        return
    t[r.to(t.device)[:, None], cols.to(t.device)[None, :]] = value


def expand_columns(model: nn.Module) -> nn.Module:
    """A copy of a compact model with every ``CompactConv2d`` written as a plain conv with zero columns.

    Same outputs. This is the form the TVM build imports: its lowering gives each conv's non-zero columns to the
    compact-conv kernel, so the compiled model keeps the column pruning without TVM knowing ``CompactConv2d``.
    """
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, CompactConv2d):
            out.set_submodule(name, module.to_conv2d())
    return out
