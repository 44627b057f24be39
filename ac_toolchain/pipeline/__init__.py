"""The stage pipeline of ``ac compress`` (docs/architecture.md draws exactly :data:`DIAGRAM`).

:func:`pipeline` is the one place that lists the stages; ``ac train`` and ``ac prune`` run a prefix of it.
"""

from __future__ import annotations

from ac_toolchain.config import goals
from ac_toolchain.context import Run, build
from ac_toolchain.pipeline.base import RoundRecord, Stage, State, run_stages
from ac_toolchain.pipeline.finish import (
    Bench,
    Compact,
    Compile,
    EvaluateCompressed,
    EvaluateDense,
    Export,
    ReportStage,
    measure,
)
from ac_toolchain.pipeline.quantize import Quantize
from ac_toolchain.pipeline.rounds import AdmmStage, Dense, LatencyTables, Purify, Retrain, RoundStart, SearchStage

__all__ = [
    "DIAGRAM", "RoundRecord", "Stage", "State", "describe", "measure", "new_state", "pipeline", "run_stages", "until",
]  # fmt: skip


def _round(run: Run, r: int) -> list[Stage]:
    """Round ``r``: Search (or the uniform rate) → ADMM → Hard prune + retrain → Purify, as the config asks."""
    cfg = run.cfg
    stages: list[Stage] = [SearchStage(r) if cfg.search.method == "anneal" else RoundStart(r)]
    stages += [AdmmStage(r)] if cfg.prune.method == "admm" else []
    stages.append(Retrain(r))
    stages += [Purify(r)] if cfg.purify.enabled else []
    return stages


def pipeline(run: Run) -> list[Stage]:
    """Every stage of the run, in order."""
    stages: list[Stage] = [LatencyTables()] if "latency" in goals(run.cfg.search) else []
    stages += [Dense(), EvaluateDense()]
    for r in range(1, run.cfg.search.rounds + 1):
        stages += _round(run, r)
    stages += [EvaluateCompressed(), Compact(), Export()]
    stages += [Quantize()] if run.cfg.quantize.mode == "int8" else []
    stages.append(Compile())
    stages += [Bench(run.platform.bench)] if run.platform.bench else []
    stages.append(ReportStage())
    return stages


def until(stages: list[Stage], last: type[Stage]) -> list[Stage]:
    """The stages up to the last one of type ``last`` (``ac train``: Dense; ``ac prune``: the rounds)."""
    end = max(i for i, s in enumerate(stages) if isinstance(s, last))
    return stages[: end + 1]


OPTIONAL = {"Latency tables", "Quantize"}  # stages only some runs have, drawn in brackets; rounds are drawn once


def describe(stages: list[Stage]) -> str:
    """The diagram of a stage list: ``Dense → Evaluate → Round × N [Search → ...] → ...``."""
    names: list[str] = []
    for stage in stages:
        r = getattr(stage, "r", None)
        if r is None:
            names.append(f"[{stage.label}]" if stage.label in OPTIONAL else stage.label)
        elif not names or not names[-1].startswith("Round"):
            first = [s.label for s in stages if getattr(s, "r", None) == r]
            names.append(f"Round × N [{' → '.join(first)}]")
    return " → ".join(names)


# The whole pipeline as docs/architecture.md draws it: describe(pipeline(run)) for a run that has every stage
# (tests/pipeline/test_pipeline.py checks both).
DIAGRAM = (
    "[Latency tables] → Dense → Evaluate → Round × N [Search → ADMM → Hard prune + retrain → Purify] → Evaluate "
    "→ Compact → Export → [Quantize] → Compile → Bench → Report"
)


def new_state(run: Run) -> State:
    return State(build(run.cfg, run.splits.num_classes).to(run.device))
