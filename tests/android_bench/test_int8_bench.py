"""A quantized run benched on qemu-arm64: the int8 compact model is a third variant, built with its convs on the
int8 kernel (dot product), counted, and checked against our simulation of its QDQ model."""

import json
import shutil
from pathlib import Path

from ac_toolchain.bench_run import INT8, QUICK, bench_run
from ac_toolchain.config import QuantizeConfig
from ac_toolchain.quantize import quantize_run


def test_bench_measures_the_int8_model_beside_dense_and_compressed(smoke_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(smoke_run, tmp_path / smoke_run.name))  # the shared run stays as it is
    quantize_run(run, QuantizeConfig("int8", calib_batches=2))
    result = bench_run(run, "qemu-arm64", QUICK)
    assert list(result["variants"]) == ["dense", "compressed", INT8]
    manifest = json.loads((run / "bench" / "artifacts" / "android-arm64-int8" / "manifest.json").read_text())
    assert manifest["kernel_int8_convolutions"] == 2 and manifest["kernel_int8_path"] == "neon-sdot"  # LeNet's convs
    counts = {name: v["instructions"] for name, v in result["variants"].items()}
    assert 0 < counts[INT8] < counts["compressed"] < counts["dense"]
    check = result["output_check_int8"]
    assert check["status"] == "ok" and check["max_steps"] <= 2.0  # LeNet: two layers, so at most two steps
    report = json.loads((run / "report.json").read_text())
    assert f"| {INT8} |" in report["bench"]["qemu-arm64"]["table"]
