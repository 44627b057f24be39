"""What every stage of the pipeline shares: the :class:`Stage` interface, the typed :class:`State` that flows
between stages, and the round record.

A stage names its products in the run directory; ``done(run)`` is true when they all exist, and then
``restore`` rebuilds the state from them instead of running again (``ac compress --resume``). A half-done
training stage continues from its newest checkpoint (``checkpoints/<stage>-<epoch>.pt``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ac_toolchain import distributed, runs
from ac_toolchain.context import Run
from ac_toolchain.graph import Graph, trace
from ac_toolchain.prune.purify import DeadReport, RedundantReport
from ac_toolchain.prune.schemes import LayerPlan, Masks
from ac_toolchain.prune.spec import Spec
from ac_toolchain.report.records import AdmmIteration, DistillCost, Findings, Report, SearchSummary
from ac_toolchain.train import FitSettings, evaluate, make_loader


@dataclass
class Purification:
    dead: DeadReport
    redundant: RedundantReport


@dataclass
class RoundRecord:
    """What one round did, for the report."""

    round: int
    spec: Spec
    layers: list[LayerPlan] = field(default_factory=list)  # the hard-prune plan, per layer
    admm: list[AdmmIteration] = field(default_factory=list)
    purification: Purification | None = None
    search: SearchSummary | None = None  # the search's summary (search.json), if it ran
    distill: dict[str, DistillCost] = field(default_factory=dict)  # training stage → the teacher's cost


@dataclass
class State:
    """What flows from stage to stage: the model (masked, full size), its masks, the rounds so far, and the
    report as the back half fills it in."""

    model: nn.Module
    masks: Masks | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    found: Findings = field(default_factory=Findings)  # what the back half measured
    report: Report | None = None
    compact: nn.Module | None = None  # the physically smaller model, once the Compact stage made it
    teacher: nn.Module | None = None  # frozen copy of the dense model, with distill.enabled (the Dense stage)

    def current(self) -> RoundRecord:
        return self.rounds[-1]


class Stage:
    """A step of the pipeline. ``label`` is its name in the pipeline diagram (docs/architecture.md).

    Under torchrun every rank runs a ``parallel`` stage (rank 0 alone writes its products); rank 0 alone runs
    the others (measuring, export, compile, bench, report)."""

    name = "stage"
    label = "Stage"
    parallel = True

    def products(self, run: Run) -> list[Path]:
        return []

    def done(self, run: Run) -> bool:
        paths = self.products(run)
        return bool(paths) and all(p.is_file() for p in paths)

    def run(self, run: Run, state: State) -> State:
        raise NotImplementedError

    def restore(self, run: Run, state: State) -> State:
        return state

    def finish(self, run: Run, state: State) -> State:
        """The end of :meth:`run`: once rank 0 has written the products, every rank restores from them."""
        distributed.barrier(self.name)
        return self.restore(run, state)


def run_stages(run: Run, stages: list[Stage], state: State) -> State:
    """Run each stage, or restore it from its products when it is done (resume).

    Under torchrun rank 0 decides what is done; a stage only rank 0 runs is restored from its products by the
    others after a barrier, and once no parallel stage is left they wait for rank 0's report."""
    last = max((i for i, s in enumerate(stages) if s.parallel), default=-1)
    for i, stage in enumerate(stages):
        if i > last and not distributed.is_main():
            break
        with run.stage(stage.name):
            state = _step(run, stage, state, solo=i > last)
            state.model.to(run.device)
    if last < len(stages) - 1 and distributed.active():
        state.report = distributed.broadcast(state.report)
    return state


def _step(run: Run, stage: Stage, state: State, solo: bool) -> State:
    """One stage on this rank; ``solo``: only rank 0 is left."""
    done = stage.done(run) if solo else distributed.broadcast(stage.done(run))
    if stage.parallel or distributed.is_main():
        with distributed.alone() if not stage.parallel else nullcontext():
            state = stage.restore(run, state) if done else stage.run(run, state)
    if not stage.parallel and not solo:  # the others wait for rank 0's products, then read them
        distributed.barrier(stage.name)
        state = stage.restore(run, state) if not distributed.is_main() else state
    return state


def atomic_save(obj: Any, path: Path) -> None:
    """:func:`runs.atomic_save` on rank 0 (the one writer); the other ranks write nothing."""
    if distributed.is_main():
        runs.atomic_save(obj, path)


def atomic_write_text(text: str, path: Path) -> None:
    if distributed.is_main():
        runs.atomic_write_text(text, path)


def write_record(record: Any, path: Path) -> None:
    if distributed.is_main():
        runs.write_record(record, path)


def round_dir(run: Run, r: int) -> Path:
    return run.dir / "rounds" / str(r)


def val_accuracy(run: Run, model: nn.Module) -> float | None:
    """Top-1 on the validation split (quiet), or None when the split is empty."""
    if len(run.splits.val) == 0:
        return None
    loader = make_loader(run.splits.val, 256, shuffle=False)
    return round(evaluate(model, loader, run.device, label=""), 6)


def fit_settings(run: Run, epochs: int, lr: float) -> FitSettings:
    return FitSettings.from_config(run.cfg.train, epochs=epochs, lr=lr)


def model_graph(run: Run, model: nn.Module) -> Graph:
    """The dependency graph of the model, traced with the run's example on the model's device."""
    return trace(model, run.example.to(next(model.parameters()).device))
