"""The qemu-arm64 device: the static aarch64 runner under qemu-user, deterministic instruction counts, `ac bench`
and its latency gate (the committed baseline, and a deliberately slower artifact that must fail it)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ac_toolchain.bench_run import torch_outputs
from ac_toolchain.cli import main
from ac_toolchain.config import load
from ac_toolchain.context import build, example_input
from ac_toolchain.export import export_onnx
from ac_toolchain.runs import load_state_dict
from android_bench import qemu
from android_bench.device import BenchSettings
from android_bench.errors import DeviceError
from android_bench.qemu import QemuDevice

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "benchmarks" / "baselines" / "lenet5-smoke-qemu-arm64.json"
# the gate's. Two benches of one runner differ by ~0.01-0.05 %; this run's speed-up was measured 0.3-0.4 % above
# the baseline's (its compressed runner counts ~0.3 % fewer instructions than the committed one's)
TOLERANCE = 0.02
EM_AARCH64 = 183


def _baseline_speedup() -> float:
    """dense / compressed of the committed baseline: the smoke run's configuration (conftest.SMOKE, its made_with);
    counts do not hang on the bench settings (runs, warm-up), so the chain's quick bench measures the same."""
    variants = json.loads(BASELINE.read_text())["variants"]
    return variants["dense"]["value"] / variants["compressed"]["value"]


def _ac(*args: str) -> tuple[int, str]:
    """Exit code and output with rich's line wrapping undone."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def _static_aarch64(path: Path) -> bool:
    elf = path.read_bytes()
    program_headers = int.from_bytes(elf[32:40], "little"), int.from_bytes(elf[56:58], "little")
    types = [int.from_bytes(elf[program_headers[0] + 56 * i :][:4], "little") for i in range(program_headers[1])]
    return int.from_bytes(elf[18:20], "little") == EM_AARCH64 and 3 not in types  # no PT_INTERP: no loader


def test_android_artifact_is_a_static_aarch64_runner_equal_to_torch(smoke_run: Path) -> None:
    report = json.loads((smoke_run / "report.json").read_text())
    assert _static_aarch64(smoke_run / "android-arm64" / "runner")
    assert "under qemu-aarch64" in report["compile"]["status"]
    assert report["compile"]["max_abs_diff"] <= 1e-4
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    (got,) = QemuDevice().infer(smoke_run / "android-arm64", [x.numpy()])
    assert abs(got - torch_outputs(smoke_run, x, 10)).max() <= 1e-4
    assert example_input(load(smoke_run / "config.toml")).shape == (1, 1, 28, 28)


def test_compress_ends_with_a_bench_in_the_report(smoke_run: Path) -> None:
    report = json.loads((smoke_run / "report.json").read_text())
    bench = report["bench"]["qemu-arm64"]
    assert bench["metric"] == "instructions"
    assert abs(bench["speedup"] / _baseline_speedup() - 1) <= TOLERANCE, (bench["speedup"], _baseline_speedup())
    assert bench["output_check"]["max_abs_diff"] <= 1e-4
    assert "bench on qemu-arm64" in report["timings"]
    assert "| compressed |" in bench["table"] and "## Bench on qemu-arm64" in (smoke_run / "report.md").read_text()


def test_instruction_counts_repeat_and_grow_with_runs(smoke_run: Path) -> None:
    device, artifact = QemuDevice(), smoke_run / "android-arm64"
    one, two = device.count(artifact, 1), device.count(artifact, 2)
    assert one < two
    first, again = (device.measure(artifact, BenchSettings())["instructions"] for _ in range(2))
    # a whole-process count includes the runner printing its timing samples (printf of doubles): a few hundred
    # instructions that vary with the times printed, so the bound is relative plus that printing's spread
    noise = 1_000
    assert abs(first - (two - one)) <= 1e-3 * first + noise
    assert abs(first - again) <= 1e-3 * first + noise


def test_bench_prints_counts_and_ratio_and_passes_the_committed_gate(smoke_run: Path) -> None:
    code, said = _ac("bench", str(smoke_run), "--bench", "qemu-arm64", "--check", str(BASELINE), "--tolerance",
                     str(TOLERANCE))  # fmt: skip
    assert code == 0, said
    bench = json.loads((smoke_run / "bench" / "qemu-arm64.json").read_text())
    dense, compressed = (bench["variants"][v]["instructions"] for v in ("dense", "compressed"))
    assert f"{dense:,}" in said and f"{compressed:,}" in said
    assert compressed < dense and bench["speedup"] == round(dense / compressed, 4)
    assert abs(bench["speedup"] / _baseline_speedup() - 1) <= TOLERANCE, (bench["speedup"], _baseline_speedup())
    assert f"{bench['speedup']}×" in said and "gate passed" in said
    assert bench["output_check"]["max_abs_diff"] <= 1e-4 and bench["status"] == "ok"
    assert "## Bench on qemu-arm64" in (smoke_run / "report.md").read_text()


def test_gate_fails_on_a_deliberately_slower_artifact(smoke_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("bench"))
    baseline = tmp_path / "baseline.json"
    assert _ac("bench", str(run), "--bench", "qemu-arm64", "--save-baseline", str(baseline))[0] == 0
    # a compaction regression: the "compressed" model is the masked one, zeros computed (same outputs, slower)
    cfg = load(run / "config.toml")
    masked = build(cfg, 10)
    load_state_dict(masked, run / "compressed.pt")
    export_onnx(masked.eval(), example_input(cfg), run / "model.tvm.onnx")
    code, said = _ac("bench", str(run), "--bench", "qemu-arm64", "--check", str(baseline), "--tolerance", "0.05")
    assert code == 2
    assert "latency gate failed" in said and "compressed:" in said
    assert "over the baseline" in said and "dense:" not in said.split("gate failed")[1]


def test_bad_baseline_and_non_run_folders_are_clear_errors(smoke_run: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("[1, 2]")
    code, said = _ac("bench", str(smoke_run), "--bench", "qemu-arm64", "--check", str(tmp_path / "junk.json"))
    assert code == 2 and said.endswith(
        f"error: --check {tmp_path / 'junk.json'}: not a baseline file (no device, metric, variants); "
        "write one with --save-baseline"
    )
    code, said = _ac("bench", str(tmp_path), "--bench", "qemu-arm64")
    assert code == 2 and "is not a run directory (no config.toml)" in said
    code, said = _ac("bench", str(smoke_run), "--bench", "pixel")
    assert code == 2 and "qemu-arm64" in said


def test_the_plugin_comes_from_whoever_registered_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "_plugin_source", None)  # the harness on its own, with no toolchain to build it
    with pytest.raises(DeviceError, match="register it with qemu.use_plugin"):
        QemuDevice().plugin()
    qemu.use_plugin(lambda: tmp_path / "libac_qemu_insn.so")
    assert QemuDevice().plugin() == tmp_path / "libac_qemu_insn.so"
