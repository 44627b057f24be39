"""Purification (the paper's P-RM step): remove what the pruned model no longer uses, then what it barely uses.

ADMM gives no feasibility guarantee: the hard projection after it fixes the requested structures, but it does
not look at what they leave behind, and retraining moves the weights again. Two things are left over:

(a) **Dead structure** (:func:`purify_dead`), exact. A channel whose every consumer reads it only through
    pruned columns is computed for nothing: its producers' filter rows, BN entries and depthwise filters can go
    without changing any output. Zeroing those rows can leave a GEMM column that is zero in every row still
    alive, so the channel that column reads may become unread in turn: the rule is iterated to a fixpoint
    through the dependency graph. (``compact`` looks at the weights once; it removes the first unread groups
    but not the unused paths behind them.)
(b) **Redundant structure** (:func:`purify_redundant`). After retraining some kept filters and columns have
    slipped to a near-zero norm. They are removed greedily, smallest norm relative to their layer's mean
    first, in shrinking batches; each batch is measured (BN statistics re-estimated first) against the model
    before the removals and undone exactly unless its criterion (:data:`CRITERIA`) keeps the top-1 drop within
    the tolerance: ``paired`` bounds the drop image by image, ``tolerance`` takes the mean drop as it is.

No data, training or export code is imported here: the caller passes evaluation and BN recalibration in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import torch
from torch import nn

from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import Graph, Position
from ac_toolchain.prune.schemes import Masks, apply_masks, gemm_view

ROW_KINDS = ("out", "dw")  # the weight slices that are one of a layer's filters
Params = dict[str, nn.Parameter]


@dataclass
class LayerRemoval:
    filters: int = 0  # filter rows (conv / linear outputs, depthwise filters)
    columns: int = 0  # GEMM columns of a dense conv or linear


@dataclass
class _Removals:
    layers: dict[str, LayerRemoval] = field(default_factory=dict)
    filters: int = 0
    columns: int = 0

    def add(self, layer: str, filters: int = 0, columns: int = 0) -> None:
        entry = self.layers.setdefault(layer, LayerRemoval())
        entry.filters, entry.columns = entry.filters + filters, entry.columns + columns
        self.filters, self.columns = self.filters + filters, self.columns + columns

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DeadReport(_Removals):
    removed_groups: list[int] = field(default_factory=list)  # dependency groups (channels) removed now
    spared_groups: list[int] = field(default_factory=list)  # unread, but kept so that no layer is left empty
    passes: int = 0  # fixpoint passes that removed something


@dataclass
class Step:
    tried: int  # structures in the batch
    filters: int
    columns: int
    accuracy: float
    accepted: bool
    drop: float | None = None  # mean top-1 drop against the model before the removals, points (None: older run)
    bound: float | None = None  # what the criterion held against the tolerance, points


@dataclass
class RedundantReport(_Removals):
    accuracy_before: float = 0.0  # after BN recalibration, before any removal
    accuracy_after: float = 0.0  # of the last accepted step (accuracy_before if none)
    tolerance: float = 0.0  # accuracy points
    criterion: str = "tolerance"  # a key of CRITERIA (runs before the choice used the tolerance rule)
    steps: list[Step] = field(default_factory=list)
    stopped: str = "step budget"


def _is_gemm(mod: nn.Module) -> bool:  # one shared GEMM matrix: a column means something
    return isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1)


# ---------------------------------------------------------------- (a) dead structure


class _Live:
    """Which weights are non-zero: the mask where a param has one, else the weight itself."""

    def __init__(self, graph: Graph, masks: Masks) -> None:
        self.params, self.masks = dict(graph.model.named_parameters()), masks
        self.live: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.live:
            src = self.masks.get(name)
            self.start[name] = (self.params[name].detach() if src is None else src).ne(0)  # a new tensor
            self.live[name] = self.start[name].clone()
        return self.live[name]

    def zero_rows(self, p: Position) -> None:
        """A filter row / BN entry / depthwise filter and its bias ('in' slices of a dead group are zero)."""
        for name in (f"{p.module}.weight", f"{p.module}.bias"):
            if name in self.params:
                self[name][p.index] = False


def _unread(graph: Graph, live: _Live, dead: set[int]) -> set[int]:
    """Prunable groups all of whose consumer slices are zero (groups without consumers are left, as compact)."""
    reads: dict[str, torch.Tensor] = {}
    out = set()
    for gid, group in enumerate(graph.groups):
        ins = group.of("in")
        if group.frozen or gid in dead or not ins:
            continue
        for layer in {p.module for p in ins} - reads.keys():  # [C] bool: input channels / features it reads
            w = live[f"{layer}.weight"]
            reads[layer] = w.transpose(0, 1).reshape(w.shape[1], -1).any(1)
        if not any(bool(reads[p.module][p.index]) for p in ins):
            out.add(gid)
    return out


def _spare(graph: Graph, live: _Live, dead: set[int], fresh: set[int]) -> set[int]:
    """Take back one group of any layer that would lose every output or every input (as compact does).

    The group is unread, so keeping it changes no output; one whose filter row is non-zero is preferred, so
    that the layer keeps a working filter.
    """
    spared = set()
    for side in (graph.layer_out, graph.layer_in):
        for layer, ids in side.items():
            unread = [g for g in ids if g in fresh]
            if not unread or not all(g in dead or g in fresh for g in ids):
                continue  # (a layer whose groups were all pruned before us has nothing left to keep)
            rows = live[f"{layer}.weight"] if side is graph.layer_out else None
            lively = [g for i, g in enumerate(ids) if g in fresh and rows is not None and bool(rows[i].any())]
            keep = (lively or unread)[0]
            fresh.discard(keep)
            spared.add(keep)
    return spared


def _pruned_before(graph: Graph, live: _Live, gid: int) -> bool:
    """Every filter row, BN entry and depthwise filter of the group (and its bias) is zero already."""
    for p in graph.groups[gid].positions:
        for name in (f"{p.module}.weight", f"{p.module}.bias") if p.kind != "in" else ():
            if name in live.params and bool(live[name][p.index].any()):
                return False
    return True


def _count(graph: Graph, live: _Live, report: DeadReport) -> DeadReport:
    """Filter rows and GEMM columns that were non-zero and are all zero now, per layer."""
    for layer in graph.layers:
        name = f"{layer}.weight"
        if name in live.live and not torch.equal(live.start[name], live[name]):
            before, after = gemm_view(live.start[name]), gemm_view(live[name])
            columns = int((before.any(0) & ~after.any(0)).sum()) if _is_gemm(graph.module(layer)) else 0
            report.add(layer, int((before.any(1) & ~after.any(1)).sum()), columns)
    return report


def purify_dead(graph: Graph, masks: Masks) -> tuple[Masks, DeadReport]:
    """New masks that also zero every channel nothing reads and every column left without alive rows.

    Iterated to a fixpoint; output-preserving (``apply_masks`` with the result changes no eval-mode output of
    the masked model). Frozen groups are never removed, and no layer loses all its outputs or inputs.
    """
    live = _Live(graph, masks)
    dead = {g for g in _unread(graph, live, set()) if _pruned_before(graph, live, g)}
    before, passes = set(dead), 0
    while True:
        fresh = _unread(graph, live, dead)
        spared = _spare(graph, live, dead, fresh)
        if not fresh:
            break
        for gid in fresh:
            for p in graph.groups[gid].positions:
                if p.kind != "in":
                    live.zero_rows(p)
        # Dead rows are zeroed in `live` now, so a column zero in every alive row is all zero there and the
        # next pass sees the channel it reads as unread: the column rule needs no separate step.
        dead, passes = dead | fresh, passes + 1
    out = {k: v.clone() for k, v in masks.items()}
    for name, now in live.live.items():
        cut = live.start[name] & ~now
        if cut.any():  # zeros only where we cut: the weights' own zeros stay free to grow back in training
            out[name] = out.get(name, torch.ones_like(now, dtype=torch.float32)) * (~cut).to(torch.float32)
    report = DeadReport(removed_groups=sorted(dead - before), spared_groups=sorted(spared), passes=passes)
    return out, _count(graph, live, report)


# ---------------------------------------------------------------- (b) redundant structure


@dataclass(frozen=True)
class _Candidate:
    relative: float  # L2 norm / the mean norm of the layer's kept structures of the same kind
    layer: str  # filters: the first layer (graph order) that produces the group
    kind: str  # "filter" (index: group id) | "column" (index: GEMM column)
    index: int


def _relative(found: dict[str, list[tuple[float, str, int]]]) -> list[_Candidate]:
    out = []
    for layer, items in found.items():
        mean = sum(s for s, _, _ in items) / len(items)
        out += [_Candidate(s / mean if mean > 0 else 0.0, layer, kind, i) for s, kind, i in items]
    return out


def _candidates(graph: Graph, params: Params, masks: Masks) -> list[_Candidate]:
    """Kept filter groups (L2 over every coupled filter row) and kept columns, smallest relative norm first."""
    rows2: dict[str, list[float]] = {}  # layer -> squared norm of each masked filter row
    rows_kept: dict[str, list[bool]] = {}
    columns: dict[str, list[tuple[float, str, int]]] = {}
    for layer in graph.layers:
        w, m = gemm_view(params[f"{layer}.weight"].detach()), masks.get(f"{layer}.weight")
        keep = torch.ones_like(w, dtype=torch.bool) if m is None else gemm_view(m).ne(0)
        sq = (w.double() * keep).square()  # the masked weight
        rows2[layer], rows_kept[layer] = sq.sum(1).tolist(), keep.any(1).tolist()
        kept = keep.any(0).nonzero().flatten().tolist() if _is_gemm(graph.module(layer)) else []
        norms = sq.sum(0).sqrt()[kept].tolist()  # removed rows are zero in w: only alive rows count
        if kept:
            columns[layer] = [(n, "column", j) for n, j in zip(norms, kept, strict=True)]
    owner: dict[int, str] = {}
    for layer in graph.layers:
        for gid in graph.filter_groups(layer):
            owner.setdefault(gid, layer)  # a coupled group is ranked in the first layer that produces it
    filters: dict[str, list[tuple[float, str, int]]] = {}
    for gid, layer in owner.items():
        rows = [p for p in graph.groups[gid].positions if p.kind in ROW_KINDS]
        if any(rows_kept[p.module][p.index] for p in rows):
            norm = math.sqrt(sum(rows2[p.module][p.index] for p in rows))
            filters.setdefault(layer, []).append((norm, "filter", gid))
    order = {name: i for i, name in enumerate(graph.layers)}
    return sorted(_relative(filters) + _relative(columns), key=lambda c: (c.relative, order[c.layer], c.kind, c.index))


def _slice(m: torch.Tensor, kind: str, index: int) -> torch.Tensor:
    """The view of a mask a position covers: a filter row / BN entry, an input column W[:, c], a GEMM column."""
    return m[:, index] if kind == "in" else gemm_view(m)[:, index] if kind == "column" else m[index]


class _Trial:
    """A copy of the masks that a batch zeroes one structure at a time, counting each layer's kept weights."""

    def __init__(self, graph: Graph, params: Params, masks: Masks) -> None:
        self.graph, self.params = graph, params
        self.masks = {k: v.clone(memory_format=torch.contiguous_format) for k, v in masks.items()}  # views write
        self.kept: dict[str, int] = {}  # layer -> non-zero entries of its weight mask, counted when first touched

    def mask(self, name: str) -> torch.Tensor:
        if name not in self.masks:
            self.masks[name] = torch.ones_like(self.params[name], dtype=torch.float32)
        if name.endswith(".weight") and name not in self.kept:
            self.kept[name] = int(self.masks[name].count_nonzero())
        return self.masks[name]

    def keeps(self, p: Position) -> bool:
        """Whether a filter row ('out' / 'dw') or a GEMM column ('column') still keeps a weight."""
        m = self.masks.get(f"{p.module}.weight")
        return m is None or bool(_slice(m, p.kind, p.index).any())

    def remove(self, c: _Candidate) -> dict[str, int]:
        """Zero one structure: {layer: filter rows or columns removed}; {} and no change when it is gone
        already (an earlier structure of the batch took it) or it would take a layer's last filter or column."""
        group = self.graph.groups[c.index].positions if c.kind == "filter" else [Position(c.layer, "column", c.index)]
        rows = [p for p in group if p.kind in (*ROW_KINDS, "column") and self.keeps(p)]
        before = set(self.masks)
        undo: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for p in group if rows else []:
            with_bias = p.kind in ("out", "bn", "dw")  # as masks_of: a filter's bias goes with it
            for name in {f"{p.module}.weight", *([f"{p.module}.bias"] if with_bias else [])} & self.params.keys():
                view = _slice(self.mask(name), p.kind, p.index)
                undo.append((name, view, view.clone()))
                if name in self.kept:
                    self.kept[name] -= int(view.count_nonzero())
                view.zero_()
        if rows and all(self.kept[f"{m}.weight"] > 0 for m in {p.module for p in group} & set(self.graph.layers)):
            return {layer: sum(p.module == layer for p in rows) for layer in {p.module for p in rows}}
        for name, view, old in reversed(undo):  # in reverse, so overlapping slices come back exactly
            view.copy_(old)
            if name in self.kept:
                self.kept[name] += int(old.count_nonzero())
        for name in set(self.masks) - before:
            del self.masks[name]
        return {}


def _batch(graph: Graph, params: Params, masks: Masks, cands: list[_Candidate], size: int
           ) -> tuple[Masks, int, _Removals]:  # fmt: skip
    """The first ``size`` removable candidates, zeroed in a copy of ``masks``."""
    trial, tried, part = _Trial(graph, params, masks), 0, _Removals()
    for c in cands:
        if tried >= size:
            break
        counts = trial.remove(c)
        tried += bool(counts)
        for layer, n in counts.items():
            part.add(layer, *((n, 0) if c.kind == "filter" else (0, n)))
    return trial.masks, tried, part


# ---------------------------------------------------------------- acceptance criteria

Scores = float | torch.Tensor  # validation top-1 in [0, 1], or which validation images are right: [N] bool
Z95 = NormalDist().inv_cdf(0.95)  # one-sided 95 %


@dataclass(frozen=True)
class Verdict:
    drop: float  # mean top-1 drop of the candidate against the reference, points (negative: a gain)
    bound: float  # the drop the criterion holds against the tolerance, points


def top1(scores: Scores) -> float:
    """Mean top-1 in [0, 1] of a scorer's answer (0 for no images)."""
    if isinstance(scores, torch.Tensor):
        return float(scores.double().mean()) if scores.numel() else 0.0
    return float(scores)


def mean_drop(reference: Scores, candidate: Scores) -> Verdict:
    """``tolerance``: the drop in mean top-1 as measured, the split's sampling noise included."""
    drop = 100.0 * (top1(reference) - top1(candidate))
    return Verdict(drop, drop)


def paired_drop(reference: Scores, candidate: Scores) -> Verdict:
    """``paired``: the one-sided 95 % upper bound of the drop d = (b − c) / n, where b of the n images are right
    before and wrong after and c the reverse: d + z₀.₉₅ · s / √n, s the std of the per-image differences.

    A normal bound on the per-image differences bounds the drop itself, randomness of b + c included; an exact
    binomial bound on b among the b + c discordant images conditions on b + c, so it never exceeds (b + c) / n.
    """
    if not (isinstance(reference, torch.Tensor) and isinstance(candidate, torch.Tensor)):
        raise TypeError("purify.criterion = paired needs per-image correctness ([N] bool), not a mean top-1")
    if reference.shape != candidate.shape:
        raise ValueError(f"per-image correctness of {tuple(reference.shape)} vs {tuple(candidate.shape)} images")
    n = reference.numel()
    if n == 0:
        return Verdict(0.0, 100.0)  # no images: nothing bounds the drop
    d = reference.double().flatten() - candidate.double().flatten()  # [n] in {-1, 0, 1}
    s = float(d.std()) if n > 1 else 0.0
    return Verdict(100.0 * float(d.mean()), 100.0 * (float(d.mean()) + Z95 * s / math.sqrt(n)))


CRITERIA: dict[str, Callable[[Scores, Scores], Verdict]] = {"paired": paired_drop, "tolerance": mean_drop}


def _judge(criterion: str, reference: Scores, scores: Scores, tolerance: float, tried: int, part: _Removals) -> Step:
    verdict = CRITERIA[criterion](reference, scores)
    accepted = verdict.bound <= tolerance + 1e-9  # a bound of exactly the tolerance is within it
    return Step(tried, part.filters, part.columns, top1(scores), accepted, round(verdict.drop, 6),
                round(verdict.bound, 6))  # fmt: skip


def purify_redundant(
    model: nn.Module,
    graph: Graph,
    masks: Masks,
    evaluate: Callable[[nn.Module], Scores],
    recalibrate: Callable[[nn.Module], None],
    tolerance: float,
    batch: float = 0.05,
    max_steps: int = 20,
    criterion: str = "tolerance",
) -> tuple[Masks, RedundantReport]:
    """Greedily remove near-zero kept filters and columns while ``criterion`` keeps the top-1 drop within
    ``tolerance`` points.

    ``evaluate`` gives validation top-1 in [0, 1] or the per-image correctness ([N] bool, the same images on
    every call; ``paired`` needs it); ``recalibrate`` re-estimates BN statistics in place. Every step is judged
    against the model before the first removal, so accepted steps never add up past the tolerance. The model is
    left with the returned masks applied and the BN state of the last accepted step.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"purify.criterion = {criterion!r} is not one of: {', '.join(CRITERIA)}")
    if not 0.0 < batch <= 1.0 or tolerance < 0 or max_steps < 0:
        raise ConfigError(f"purification needs 0 < batch <= 1, tolerance >= 0 (points), max_steps >= 0; got "
                          f"batch={batch}, tolerance={tolerance}, max_steps={max_steps}")  # fmt: skip
    params, masks = dict(model.named_parameters()), {k: v.clone() for k, v in masks.items()}
    apply_masks(model, masks)
    recalibrate(model)  # the reference is measured the way every step is
    reference = evaluate(model)
    report = RedundantReport(accuracy_before=top1(reference), accuracy_after=top1(reference), tolerance=tolerance,
                             criterion=criterion)  # fmt: skip
    if isinstance(reference, torch.Tensor) and reference.numel() == 0:
        report.stopped = "no validation images"
        return masks, report
    cands = _candidates(graph, params, masks)
    while len(report.steps) < max_steps:
        trial, tried, part = _batch(graph, params, masks, cands, max(1, int(batch * len(cands))))
        if not tried:
            report.stopped = "nothing left to remove"
            break
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}  # weights and BN statistics
        apply_masks(model, trial)
        recalibrate(model)
        step = _judge(criterion, reference, evaluate(model), tolerance, tried, part)
        report.steps.append(step)
        if step.accepted:
            masks, report.accuracy_after, cands = trial, step.accuracy, _candidates(graph, params, trial)
            for layer, e in part.layers.items():
                report.add(layer, e.filters, e.columns)
        elif tried == 1:
            model.load_state_dict(saved)
            report.stopped = "a single structure breaks the tolerance"
            break
        else:
            model.load_state_dict(saved)
            batch /= 2  # the same smallest candidates, half as many
    return masks, report
