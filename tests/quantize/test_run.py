"""``ac quantize RUN`` on a finished smoke run: the int8 files and quantize.json; a bad directory is one error."""

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result

from ac_toolchain import config as cfgmod
from ac_toolchain.cli import main
from ac_toolchain.context import load_splits
from ac_toolchain.quantize.ptq import evaluate_onnx
from ac_toolchain.train import make_loader

SMOKE = ["compress", "lenet5", "--preset", "smoke", "--search", "uniform", "--prune-method", "oneshot",
         "--search-rounds", "1", "--target", "x86"]  # fmt: skip


def _ac(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = _ac(*SMOKE, "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


def test_quantize_writes_the_int8_model_and_its_record(finished_run: Path) -> None:
    result = _ac("quantize", str(finished_run), "--calib-batches", "2", "--calibration", "minmax")
    assert result.exit_code == 0, result.output
    assert "int8 compact" in result.output and "fp32 compact" in result.output
    out = finished_run / "int8"
    record = json.loads((out / "quantize.json").read_text())
    assert record["method"] == "minmax" and record["calib_batches"] == 2
    assert record["bytes_int8"] == (out / "model.int8.onnx").stat().st_size
    assert record["bytes_fp32"] == (out / "model.fp32.onnx").stat().st_size
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    assert not [p for p in out.iterdir() if p.name not in ("model.fp32.onnx", "model.int8.onnx", "quantize.json")]
    # the recorded top-1 is the fp32 ONNX's on the run's test split, which is the compressed model's own
    compressed = json.loads((finished_run / "records" / "evaluate-compressed.json").read_text())["accuracy"]
    assert record["top1_fp32"] == pytest.approx(compressed, abs=0.002)
    splits = load_splits(cfgmod.load(finished_run / "config.toml"))
    test = make_loader(splits.test, 256, shuffle=False)
    assert record["test_images"] == len(splits.test)
    assert record["top1_int8"] == pytest.approx(evaluate_onnx(out / "model.int8.onnx", test), abs=1e-6)


@pytest.mark.parametrize("what", ["empty", "unfinished"])
def test_quantize_refuses_a_directory_that_is_not_a_finished_run(finished_run: Path, tmp_path: Path,
                                                                   what: str) -> None:  # fmt: skip
    if what == "unfinished":  # a run cut off before its compressed model
        (tmp_path / "config.toml").write_text((finished_run / "config.toml").read_text())
    result = _ac("quantize", str(tmp_path))
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "Traceback" not in text and text.count("error:") == 1
    assert "is not a finished run (no " in text and "compressed.pt" in text
    assert ("config.toml" in text) == (what == "empty")
    assert not (tmp_path / "int8").exists()


def test_quantize_help_shows_an_example_and_rejects_an_unknown_calibrator(finished_run: Path) -> None:
    assert "Example:  ac quantize" in _ac("quantize", "--help").output
    result = _ac("quantize", str(finished_run), "--calibration", "kl")
    assert result.exit_code == 2 and "'kl' is not one of" in result.output
