"""The callgrind device: x86-avx2 static runners under valgrind, deterministic instruction counts, `ac bench`."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ac_toolchain.cli import main
from ac_toolchain.errors import DeviceError
from android_bench.callgrind import CallgrindDevice, count_command, read_total
from android_bench.device import BenchSettings


def _ac(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def test_bench_counts_x86_avx2_runners_that_match_torch(smoke_run: Path) -> None:
    code, said = _ac("bench", str(smoke_run), "--bench", "callgrind")
    assert code == 0, said
    bench = json.loads((smoke_run / "bench" / "callgrind.json").read_text())
    dense, compressed = (bench["variants"][v]["instructions"] for v in ("dense", "compressed"))
    assert bench["metric"] == "instructions" and 0 < compressed < dense  # measured 666,891 vs 392,986
    assert f"{dense:,}" in said and bench["output_check"]["max_abs_diff"] <= 1e-4
    artifact = smoke_run / "bench" / "artifacts" / "x86-avx2-compressed"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"] == "x86-avx2" and manifest["link"] == "static"
    device = CallgrindDevice()
    one, two = device.count(artifact, 1), device.count(artifact, 2)
    assert one < two
    again = device.measure(artifact, BenchSettings())["instructions"]
    assert again == pytest.approx(compressed, rel=1e-3)  # measured: within ~0.02 %


def test_count_command_and_missing_totals(tmp_path: Path) -> None:
    short = count_command(["true"])
    longer = count_command(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do :; done"])
    assert 0 < short < longer
    (tmp_path / "out").write_text("events: Ir\n")
    with pytest.raises(DeviceError, match="callgrind wrote no instruction total for x"):
        read_total(tmp_path / "out", "x")
    with pytest.raises(DeviceError, match=r"exited with 1"):
        count_command(["false"])
