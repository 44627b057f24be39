"""The Purify stage (ac_toolchain/pipeline/rounds.py) on a real model and split: it scores the validation split
image by image, records each step's drop and bound in purified.json, restores the same record, and report.md
shows each step's drop and bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from ac_toolchain import config as cfgmod
from ac_toolchain.context import open_run
from ac_toolchain.pipeline import new_state
from ac_toolchain.pipeline.base import Purification, RoundRecord, model_graph, val_accuracy
from ac_toolchain.pipeline.finish import round_parts
from ac_toolchain.pipeline.rounds import Purify
from ac_toolchain.prune.spec import uniform_spec
from ac_toolchain.report.records import CompileRecord, Measurement, Method, Report
from ac_toolchain.report.render import render_markdown
from ac_toolchain.runs import read_record


@pytest.mark.parametrize("criterion", ["paired", "tolerance"])
def test_purify_stage_records_each_steps_drop_and_bound(tmp_path: Path, criterion: str) -> None:
    overrides = {"run.runs_dir": str(tmp_path), "purify.criterion": criterion, "purify.tolerance": 5.0}
    cfg, _ = cfgmod.resolve("lenet5", "smoke", overrides)
    run = open_run(cfg)
    state = new_state(run)  # untrained: near chance, so removals change answers
    state.rounds.append(RoundRecord(1, uniform_spec(model_graph(run, state.model).layers, 0.5, "filter")))
    stage = Purify(1)
    state = stage.run(run, state)
    record = read_record(Purification, stage.products(run)[1])
    redundant = record.redundant
    assert redundant.criterion == criterion and redundant.tolerance == 5.0 and redundant.steps
    for step in redundant.steps:
        assert step.drop is not None and step.bound is not None
        assert step.drop == pytest.approx(100 * (redundant.accuracy_before - step.accuracy), abs=1e-5)
        assert step.accepted == (step.bound <= 5.0 + 1e-9)
        assert step.bound >= step.drop - 1e-6 if criterion == "paired" else step.bound == step.drop
    assert redundant.accuracy_after == pytest.approx(val_accuracy(run, state.model), abs=1e-6)
    assert state.current().purification == record
    m = Measurement(0.9, 1000, 5000)
    report = Report("lenet5", "mnist-mini", "x86", m, m, 0.0, {"params": 1.0, "flops": 1.0}, Method.of(cfg), 0.0,
                    0.0, CompileRecord("x86", {}, "ok"), **round_parts(state))  # fmt: skip
    md = render_markdown(report).splitlines()
    first = redundant.steps[0]
    row = (f"| 1 | {first.tried} | {first.accuracy:.2%} | {first.drop:.2f} | {first.bound:.2f} | "
           f"{'yes' if first.accepted else 'no'} |")  # fmt: skip
    assert row in md and any(line.startswith("- redundant:") and f"criterion {criterion}" in line for line in md)
