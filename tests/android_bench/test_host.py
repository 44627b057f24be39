"""HostDevice with a stand-in runner: a small executable script that speaks the runner's protocol."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from ac_toolchain.errors import DeviceError
from android_bench import host
from android_bench.device import BenchSettings
from android_bench.host import HostDevice

GOOD = """
import json, sys
print("loading model", flush=True)                      # noise on stdout is skipped
print("a warning on stderr", file=sys.stderr)
print(json.dumps({"event": "start", "argv": sys.argv[1:]}), flush=True)
for i, us in enumerate([120.0, 100.0, 110.0]):
    print(json.dumps({"event": "sample", "index": i, "us": us}), flush=True)
print(json.dumps({"event": "done", "runs": 3, "total_us": 330.0}))
"""
CRASH = """
import json, sys
print(json.dumps({"event": "sample", "index": 0, "us": 5.0}), flush=True)
print(json.dumps({"event": "sample", "index": 1, "us": 6.0}), flush=True)
print("cannot allocate workspace: 512 MiB", file=sys.stderr)
sys.exit(3)
"""
SILENT_EXIT = """
import json
print(json.dumps({"event": "sample", "index": 0, "us": 5.0}))
"""


def artifact(tmp_path: Path, script: str, mode: int = 0o755) -> Path:
    (tmp_path / "manifest.json").write_text("{}")
    runner = tmp_path / "runner"
    runner.write_text(f"#!{sys.executable}\n{script}")
    runner.chmod(mode)
    return tmp_path


def test_identity_of_this_machine() -> None:
    device = HostDevice()
    assert device.name == "host" and device.metric == "latency_us" and device.arch in {"x86_64", "aarch64"}
    fp = device.fingerprint()
    assert fp["machine"] == device.arch and fp["cpu"] and fp["os"] and int(fp["cpus"]) >= 1


@pytest.mark.parametrize(("machine", "arch"), [("AMD64", "x86_64"), ("arm64", "aarch64"), ("aarch64", "aarch64")])
def test_arch_names_are_normalised(machine: str, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert HostDevice().arch == arch


def test_measure_runs_the_runner_in_its_folder_and_streams_samples(tmp_path: Path) -> None:
    got: list[float] = []
    out = HostDevice().measure(artifact(tmp_path, GOOD), BenchSettings(warmup=2, runs=3, threads=0, seed=5), got.append)
    assert got == out["samples_us"] == [120.0, 100.0, 110.0]
    assert out["metric"] == "latency_us" and out["runner"]["done"]["total_us"] == 330.0
    argv = out["runner"]["start"]["argv"]
    assert argv[:2] == ["--manifest", "manifest.json"] and argv[argv.index("--runs") + 1] == "3"
    assert argv[argv.index("--threads") + 1] == str(os.cpu_count())  # 0 means every core


def test_a_failing_runner_reports_its_status_and_stderr_after_the_samples_it_printed(tmp_path: Path) -> None:
    got: list[float] = []
    with pytest.raises(DeviceError, match=r"exited with status 3: cannot allocate workspace: 512 MiB"):
        HostDevice().measure(artifact(tmp_path, CRASH), BenchSettings(), got.append)
    assert got == [5.0, 6.0]


def test_a_runner_that_exits_cleanly_without_done_stopped_early(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="stopped early.*after 1 sample"):
        HostDevice().measure(artifact(tmp_path, SILENT_EXIT), BenchSettings())


def test_missing_or_unrunnable_runner(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="holds no 'runner'"):
        HostDevice().measure(tmp_path, BenchSettings())
    with pytest.raises(DeviceError, match="cannot start .*runner"):
        HostDevice().measure(artifact(tmp_path, GOOD, mode=0o644), BenchSettings())


def test_thermal_reads_every_readable_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, (kind, temp) in enumerate([("x86_pkg_temp", "47000"), ("acpitz", None), ("iwlwifi_1", "")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        if temp is not None:
            (zone / "temp").write_text(temp + "\n")
    monkeypatch.setattr(host, "THERMAL_ROOT", tmp_path)
    assert HostDevice().thermal() == {"x86_pkg_temp": 47.0}
    monkeypatch.setattr(host, "THERMAL_ROOT", tmp_path / "none")
    assert HostDevice().thermal() == {}
