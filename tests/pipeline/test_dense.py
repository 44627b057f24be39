"""The Dense stage (ac_toolchain/pipeline/rounds.py): it trains until validation top-1 plateaus and keeps the last
epoch, a cut-off training resumes to the same end, a model at chance stops the run at once with dense.pt kept, and
the report says how the dense model came to be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ac_toolchain import config as cfgmod
from ac_toolchain import context
from ac_toolchain.cli import main
from ac_toolchain.context import open_run
from ac_toolchain.pipeline import new_state, run_stages
from ac_toolchain.pipeline.rounds import Dense
from ac_toolchain.report.records import CompileRecord, DenseTraining, Measurement, Method, Report
from ac_toolchain.report.render import render_markdown
from ac_toolchain.runs import read_record, safe_load

# 3 batches an epoch: lenet5 plateaus within a few epochs (patience 2) well before the cap
PLATEAU = {"train.epochs": 10, "train.max_batches": 3, "train.patience": 2, "train.min_above_chance": 0}


class _Killed(Exception):
    pass


def _dense(runs: Path, run_dir: Path | None = None) -> tuple[Path, DenseTraining | None]:
    cfg, _ = cfgmod.resolve("lenet5", "smoke", {**PLATEAU, "run.runs_dir": str(runs)})
    run = open_run(cfg, run_dir)
    state = run_stages(run, [Dense()], new_state(run))
    return run.dir, state.found.dense_training


def test_dense_training_stops_on_a_plateau_and_a_cut_off_one_resumes_to_the_same_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, record = _dense(tmp_path / "whole")
    assert record is not None and record == read_record(DenseTraining, whole / "records" / "dense.json")
    assert record.max_epochs == 10 and record.best_epoch is not None and record.val_accuracy is not None
    assert record.epochs == record.best_epoch + 2 < 10  # stopped on the plateau, not at the cap
    cut = record.best_epoch + 1  # past the best epoch, before the stop
    save = context.save_checkpoint

    def save_then_die(run_dir: Path, stage: str, epoch: int, state: dict[str, Any]) -> Path:
        path = save(run_dir, stage, epoch, state)
        if epoch == cut:
            raise _Killed
        return path

    monkeypatch.setattr(context, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        _dense(tmp_path / "cut")
    monkeypatch.undo()
    (run,) = list((tmp_path / "cut").iterdir())
    assert not (run / "dense.pt").exists() and (run / "checkpoints" / f"dense-{cut:04d}.pt").is_file()
    _, resumed = _dense(tmp_path / "cut", run)
    assert resumed == record
    want, got = safe_load(whole / "dense.pt"), safe_load(run / "dense.pt")
    assert want.keys() == got.keys() and all((want[k] == got[k]).all() for k in want)  # bit for bit


def _ac(*args: str) -> tuple[int, str]:
    """Exit code and output, the lines rich wrapped joined again."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def test_a_dense_model_at_chance_stops_the_run_after_the_dense_stage_and_keeps_it(tmp_path: Path) -> None:
    runs = str(tmp_path / "r")
    code, said = _ac("compress", "lenet5", "--preset", "smoke", "--train-epochs", "0", "--runs-dir", runs)
    assert code == 2 and "Traceback" not in said
    assert "error: the dense model's validation top-1 is" in said and "points above chance (10.00% for 10" in said
    for advice in ("--train-epochs", "--train-lr", "--dense FILE"):
        assert advice in said
    (run,) = list((tmp_path / "r").iterdir())
    assert (run / "dense.pt").is_file() and f"keptin{run / 'dense.pt'}" in "".join(said.split())  # rich wraps it
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.toml", "dense.pt", "records"]
    assert [p.name for p in (run / "records").iterdir()] == ["dense.json"]  # nothing after the Dense stage ran
    code, said = _ac("compress", "--resume", str(run))
    assert code == 2 and "points above chance" in said  # a resumed run stops there again
    code, said = _ac("compress", "lenet5", "--preset", "smoke", "--dense", str(run / "dense.pt"),
                     "--runs-dir", str(tmp_path / "loaded"))  # fmt: skip
    assert code == 2 and "is not a trained model of this task" in said


def _report(training: DenseTraining) -> Report:
    m = Measurement(0.9, 1000, 5000)
    return Report("lenet5", "mnist-mini", "x86", m, m, 0.0, {"params": 1.0, "flops": 1.0},
                  Method.of(cfgmod.CompressConfig()), 0.0, 0.0, CompileRecord("x86", {}, "ok"),
                  dense_training=training)  # fmt: skip


@pytest.mark.parametrize(
    ("training", "line"),
    [
        (DenseTraining(epochs=5, max_epochs=10, best_epoch=3, val_accuracy=0.912),
         "Dense model: trained 5 of 10 epochs; last new best at epoch 3, validation top-1 91.20%."),
        (DenseTraining(epochs=4, max_epochs=4, best_epoch=4),
         "Dense model: trained 4 of 4 epochs; the last kept (no validation split)."),
        (DenseTraining(loaded="/m/dense.pt", val_accuracy=0.9),
         "Dense model: loaded from `/m/dense.pt` (validation top-1 90.00%)."),
    ],
)  # fmt: skip
def test_the_report_says_how_the_dense_model_came_to_be(training: DenseTraining, line: str) -> None:
    assert line in render_markdown(_report(training)).splitlines()
