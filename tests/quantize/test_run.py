"""The Quantize stage (``ac compress --quantize int8``) and ``ac quantize RUN`` on one finished smoke run: the
four models and their record, the report's int8 section and plot, the torch simulation beside onnxruntime; bad
input is one error."""

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result

from ac_toolchain import config as cfgmod
from ac_toolchain.cli import main
from ac_toolchain.context import load_splits
from ac_toolchain.quantize.ptq import evaluate_onnx
from ac_toolchain.report.records import INT8_VARIANTS
from ac_toolchain.train import make_loader

SMOKE = ["compress", "lenet5", "--preset", "smoke", "--search", "uniform", "--prune-method", "oneshot",
         "--search-rounds", "1", "--target", "x86", "--quantize", "int8", "--quantize-calib-batches", "4",
         "--quantize-qat-epochs", "1"]  # fmt: skip
FILES = {"dense fp32": "dense.fp32.onnx", "dense int8": "dense.int8.onnx", "compact fp32": "model.fp32.onnx",
         "compact int8": "model.int8.onnx", "compact QAT int8": "model-qat.int8.onnx"}  # fmt: skip


def _ac(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = _ac(*SMOKE, "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


def _test_loader(run: Path):
    splits = load_splits(cfgmod.load(run / "config.toml"))
    return make_loader(splits.test, 256, shuffle=False), len(splits.test)


def test_the_quantize_stage_writes_four_models_their_record_and_the_report_section(finished_run: Path) -> None:
    record = json.loads((finished_run / "records" / "quantize.json").read_text())
    out = finished_run / "int8"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())  # no temporary files left
    assert list(record["variants"]) == [*INT8_VARIANTS, "compact QAT int8"] and record["calib_batches"] == 4
    assert record["method"] == "percentile"
    test, n = _test_loader(finished_run)
    assert record["test_images"] == n
    for name, file in FILES.items():
        v = record["variants"][name]
        assert v["bytes"] == (out / file).stat().st_size and v["path"] == str(out / file) and v["host_ms"] > 0
        assert v["top1"] == pytest.approx(evaluate_onnx(out / file, test), abs=1e-6)  # the recorded top-1 is real
        ops = {node.op_type for node in onnx.load(str(out / file)).graph.node}
        assert ("QuantizeLinear" in ops and "DequantizeLinear" in ops) == name.endswith("int8")
    # the fp32 files are the run's own models: the compact one scores what the compressed model scored
    for kind, evaluated in (("dense", "evaluate-dense"), ("compact", "evaluate-compressed")):
        want = json.loads((finished_run / "records" / f"{evaluated}.json").read_text())["accuracy"]
        assert record["variants"][f"{kind} fp32"]["top1"] == pytest.approx(want, abs=0.002)
    # our torch simulation and onnxruntime agree on the int8 compact model within 0.1 points (docs/quantize.md)
    assert abs(record["simulated_top1"] - record["variants"]["compact int8"]["top1"]) <= 0.001
    report = json.loads((finished_run / "report.json").read_text())
    assert report["quantize"] == record and report["plots"]["int8"] == "plots/int8.png"
    assert (finished_run / "plots" / "int8.png").stat().st_size > 0
    text = (finished_run / "report.md").read_text()
    assert "## int8" in text and "| compact int8 |" in text and "![int8 size vs accuracy](plots/int8.png)" in text


def test_ac_quantize_requantizes_a_finished_run_and_rerenders_its_report(finished_run: Path) -> None:
    result = _ac("quantize", str(finished_run), "--calib-batches", "2", "--calibration", "minmax")
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in INT8_VARIANTS) and "QAT" not in result.output
    record = json.loads((finished_run / "records" / "quantize.json").read_text())
    assert record["method"] == "minmax" and record["calib_batches"] == 2 and list(record["variants"]) == list(
        INT8_VARIANTS)
    assert not (finished_run / "int8" / "model-qat.int8.onnx").exists()  # the stage's QAT model: not this record's
    report = json.loads((finished_run / "report.json").read_text())
    assert report["quantize"] == record and "`minmax` calibration" in (finished_run / "report.md").read_text()


@pytest.mark.parametrize("what", ["empty", "unfinished"])
def test_quantize_refuses_a_directory_that_is_not_a_finished_run(finished_run: Path, tmp_path: Path,
                                                                   what: str) -> None:  # fmt: skip
    if what == "unfinished":  # a run cut off before its compressed model
        (tmp_path / "config.toml").write_text((finished_run / "config.toml").read_text())
        (tmp_path / "dense.pt").write_bytes((finished_run / "dense.pt").read_bytes())
    result = _ac("quantize", str(tmp_path))
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "Traceback" not in text and text.count("error:") == 1
    assert "is not a finished run (no " in text and "compressed.pt" in text
    assert ("config.toml" in text) == (what == "empty") and ("dense.pt" in text) == (what == "empty")
    assert not (tmp_path / "int8").exists()


def test_quantize_help_shows_an_example_and_rejects_an_unknown_calibrator(finished_run: Path) -> None:
    assert "Example:  ac quantize" in _ac("quantize", "--help").output
    result = _ac("quantize", str(finished_run), "--calibration", "kl")
    assert result.exit_code == 2 and "'kl' is not one of" in result.output


def test_compress_refuses_int4_before_any_work(tmp_path: Path) -> None:
    result = _ac("compress", "lenet5", "--preset", "smoke", "--quantize", "int4", "--runs-dir", str(tmp_path))
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and text.count("error:") == 1
    assert "quantize.mode = 'int4' is not one of: off, int8" in text
    assert not list(tmp_path.iterdir())  # no run directory
