"""benchmarks/int8.py on one smoke run: the four models and the QAT one, the paired differences, the files."""

import json
from pathlib import Path

import pytest

from benchmarks import int8


def test_the_int8_benchmark_writes_four_models_per_run_and_their_paired_difference(tmp_path: Path) -> None:
    work = tmp_path / "runs"
    int8.main(["--model", "lenet5", "--preset", "smoke", "--workdir", str(work), "--calib-batches", "2",
               "--qat-epochs", "1", "--results-dir", str(tmp_path / "out")])  # fmt: skip
    (run,) = (work / "lenet5-smoke").iterdir()  # compressed here first
    assert int8.finished_run("lenet5", "smoke", work) == run  # and found again, not compressed a second time
    doc = json.loads((tmp_path / "out" / "int8.json").read_text())
    (row,) = doc["rows"]
    assert list(row["variants"]) == ["dense fp32", "dense int8", "compact fp32", "compact int8", "compact QAT int8"]
    v, d = row["variants"], row["int8_minus_fp32"]
    # the paired per-image mean is the difference of the two recorded top-1s
    assert d["mean"] == pytest.approx(100 * (v["compact int8"]["top1"] - v["compact fp32"]["top1"]), abs=1e-3)
    assert d["images"] == row["test_images"] and d["low"] <= d["mean"] <= d["high"]
    assert row["size_ratio"] == pytest.approx(v["compact fp32"]["bytes"] / v["compact int8"]["bytes"], abs=1e-3)
    text = (tmp_path / "out" / "int8.md").read_text()
    q = row["qat_minus_ptq"]
    assert q["mean"] == pytest.approx(100 * (v["compact QAT int8"]["top1"] - v["compact int8"]["top1"]), abs=1e-3)
    assert text.count("| lenet5 (") == 5 and d["verdict"] in text and "compact QAT int8 − PTQ int8" in text
    assert (tmp_path / "out" / "int8.png").stat().st_size > 0
