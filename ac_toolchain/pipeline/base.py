"""What every stage of the pipeline shares: the :class:`Stage` interface, the typed :class:`State` that flows
between stages, and the round record.

A stage names its products in the run directory; ``done(run)`` is true when they all exist, and then
``restore`` rebuilds the state from them instead of running again (``ac compress --resume``). A half-done
training stage continues from its newest checkpoint (``checkpoints/<stage>-<epoch>.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

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
    """A step of the pipeline. ``label`` is its name in the pipeline diagram (docs/architecture.md)."""

    name = "stage"
    label = "Stage"

    def products(self, run: Run) -> list[Path]:
        return []

    def done(self, run: Run) -> bool:
        paths = self.products(run)
        return bool(paths) and all(p.is_file() for p in paths)

    def run(self, run: Run, state: State) -> State:
        raise NotImplementedError

    def restore(self, run: Run, state: State) -> State:
        return state


def run_stages(run: Run, stages: list[Stage], state: State) -> State:
    """Run each stage, or restore it from its products when it is done (resume)."""
    for stage in stages:
        with run.stage(stage.name):
            state = stage.restore(run, state) if stage.done(run) else stage.run(run, state)
            state.model.to(run.device)
    return state


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
