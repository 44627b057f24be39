"""bench(): the JSON a run keeps, the speed-up, and the regression gate (android_bench/bench.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ac_toolchain import bench_run as bench_run_module
from ac_toolchain.cli import main
from ac_toolchain.errors import DeviceError
from android_bench.adb import AdbDevice
from android_bench.bench import baseline_from, bench, check_gate, speedup_table
from android_bench.device import BenchSettings, Device
from android_bench.fake import FakeTransport
from android_bench.lock import DeviceLock

FIXTURES = Path(__file__).parent / "fixtures"
COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines" / "lenet5-smoke-qemu-arm64.json"
SETTINGS = BenchSettings(runs=20, cooldown_s=7.5)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AC_CACHE_DIR", str(tmp_path / "cache"))


def artifacts(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("dense", "compressed"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "runner").write_bytes(f"runner {name}".encode())
        (tmp_path / name / "manifest.json").write_text(json.dumps({"variant": name}))
        out[name] = tmp_path / name
    return out


def samples(fixture: str) -> list[float]:
    events = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    return [e["us"] for e in events if e["event"] == "sample"]


class CountingDevice(Device):
    """Like qemu-arm64: deterministic instruction counts, no samples, no thermal zones."""

    name, arch, metric = "qemu-arm64", "aarch64", "instructions"

    def __init__(self, counts: dict[str, int], fail: BaseException | None = None) -> None:
        self.counts, self.fail = counts, fail

    def fingerprint(self) -> dict[str, str]:
        return {"cpu": "cortex-a72 (emulated)"}

    def thermal(self) -> dict[str, float]:
        return {}

    def measure(
        self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        if self.fail and artifact.name == "compressed":
            raise self.fail
        return {"metric": "instructions", "instructions": self.counts[artifact.name], "runs": 1}


def written_phone_bench(tmp_path: Path) -> tuple[dict[str, Any], Path, list[float]]:
    out_json = tmp_path / "run" / "bench" / "adb_FAKE0001.json"
    slept: list[float] = []
    device = AdbDevice("FAKE0001", FakeTransport(FIXTURES / "written-like-pixel7"))
    result = bench(device, artifacts(tmp_path), SETTINGS, out_json, slept.append)
    return result, out_json, slept


def test_bench_on_a_phone_writes_every_field(tmp_path: Path) -> None:
    result, out_json, slept = written_phone_bench(tmp_path)
    saved = json.loads(out_json.read_text())
    assert saved == result and list(out_json.parent.iterdir()) == [out_json]  # no temp file left behind
    assert saved["device"] == "adb:FAKE0001" and saved["metric"] == "latency_us" and saved["status"] == "ok"
    assert saved["fingerprint"]["model"] == "Pixel 7" and saved["settings"] == asdict(SETTINGS)
    assert datetime.fromisoformat(saved["created"]).tzinfo is not None
    assert slept == [7.5]  # one cool-down, between the two variants
    dense, compressed = saved["variants"]["dense"], saved["variants"]["compressed"]
    assert dense["artifact"] == str(tmp_path / "dense") and len(dense["manifest_sha256"]) == 64
    assert dense["samples_us"] == samples("written-like-pixel7/runner-0.jsonl")
    assert compressed["samples_us"] == samples("written-like-pixel7/runner-1.jsonl")
    runners = ("written-like-pixel7/runner-0.jsonl", "written-like-pixel7/runner-1.jsonl")
    for entry, fixture in zip((dense, compressed), runners, strict=True):
        a = np.array(samples(fixture))
        assert entry["stats"] == pytest.approx(
            {"n": 20, "min": a.min(), "median": np.median(a), "mean": a.mean(), "std": a.std(),
             "p5": np.percentile(a, 5), "p95": np.percentile(a, 95)}
        )  # fmt: skip
    # thermal reads 0..3 of the fixture: idle, after dense, after the cool-down, after compressed
    assert (dense["thermal_before"]["BIG"], dense["thermal_after"]["BIG"], dense["thermal_delta"]["BIG"]) == (
        41.25, 52.875, 11.625)  # fmt: skip
    assert compressed["thermal_delta"]["BIG"] == 5.875 and "cellular-emergency" not in compressed["thermal_delta"]
    expected = np.median(samples(runners[0])) / np.median(samples(runners[1]))
    assert saved["speedup"] == pytest.approx(expected, abs=1e-4) and 2.5 < saved["speedup"] < 3.1


def test_instruction_counts_give_the_speedup_without_samples_or_cooldown(tmp_path: Path) -> None:
    slept: list[float] = []
    device = CountingDevice({"dense": 9_000_000, "compressed": 3_000_000})
    result = bench(device, artifacts(tmp_path), SETTINGS, tmp_path / "q.json", slept.append)
    assert result["speedup"] == 3.0 and slept == [] and result["metric"] == "instructions"
    dense = result["variants"]["dense"]
    assert dense["instructions"] == 9_000_000 and dense["runs"] == 1
    assert "samples_us" not in dense and "stats" not in dense and dense["thermal_delta"] == {}


def test_a_busy_device_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with DeviceLock("adb:FAKE0001"), pytest.raises(DeviceError, match="in use by another bench"):
        written_phone_bench(tmp_path)
    assert not (tmp_path / "run").exists()


def test_an_interrupted_bench_saves_what_it_measured_and_reraises_unchanged(tmp_path: Path) -> None:
    device = CountingDevice({"dense": 10, "compressed": 5}, fail=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        bench(device, artifacts(tmp_path), SETTINGS, tmp_path / "q.json")
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["status"] == "failed: KeyboardInterrupt" and saved["speedup"] is None
    assert saved["variants"]["dense"]["instructions"] == 10 and "instructions" not in saved["variants"]["compressed"]


def test_speedup_table(tmp_path: Path) -> None:
    result = bench(CountingDevice({"dense": 9_000_000, "compressed": 2_000_000}), artifacts(tmp_path), SETTINGS,
                   tmp_path / "q.json")  # fmt: skip
    assert speedup_table(result).splitlines() == [
        "| variant | value | unit | speed-up vs dense |",
        "|---|---:|---|---:|",
        "| dense | 9,000,000 | instructions | 1.00× |",
        "| compressed | 2,000,000 | instructions | 4.50× |",
    ]
    latency, _, _ = written_phone_bench(tmp_path / "phone")
    median = latency["variants"]["compressed"]["stats"]["median"]
    assert f"| compressed | {median:,.1f} | µs (median) | {latency['speedup']:.2f}× |" in speedup_table(latency)


# --- the gate --------------------------------------------------------------------------------------------------


def counted(tmp_path: Path, dense: int, compressed: int, name: str = "q") -> dict[str, Any]:
    (tmp_path / name).mkdir()
    return bench(CountingDevice({"dense": dense, "compressed": compressed}), artifacts(tmp_path / name), SETTINGS,
                 tmp_path / name / "out.json")  # fmt: skip


def test_baseline_holds_metric_device_values_and_manifest_hashes(tmp_path: Path) -> None:
    result = counted(tmp_path, 1000, 400)
    baseline = baseline_from(result)
    assert baseline["metric"] == "instructions" and baseline["device"] == "qemu-arm64"
    assert baseline["history"] == [{"date": result["created"], "values": {"dense": 1000, "compressed": 400},
                                    "speedup": 2.5}]  # fmt: skip
    assert baseline["variants"]["dense"]["value"] == 1000 and baseline["variants"]["compressed"]["value"] == 400
    assert len(baseline["variants"]["dense"]["manifest_sha256"]) == 64
    assert json.loads(json.dumps(baseline)) == baseline  # the CLI writes it as JSON


def test_gate_passes_within_tolerance_and_fails_beyond_it(tmp_path: Path) -> None:
    baseline = baseline_from(counted(tmp_path, 1000, 400, "base"))
    assert check_gate(counted(tmp_path, 1000, 408, "same"), baseline, 0.02) == []  # +2.0 %: at the limit
    assert check_gate(counted(tmp_path, 900, 300, "faster"), baseline, 0.0) == []
    failures = check_gate(counted(tmp_path, 1005, 420, "slower"), baseline, 0.02)
    assert failures == ["compressed: 420 instructions is +5.00% over the baseline 400 (tolerance 2.00%)"]


def test_gate_refuses_what_cannot_be_compared(tmp_path: Path) -> None:
    result = counted(tmp_path, 1000, 400)
    baseline = baseline_from(result)
    latency = {**baseline, "metric": "latency_us", "device": "adb:X"}
    assert "cannot be compared" in check_gate(result, latency, 0.02)[0]
    missing = {**baseline, "variants": {**baseline["variants"], "pruned-more": {"value": 300}}}
    assert check_gate(result, missing, 0.02) == ["pruned-more: in the baseline but not measured now"]
    failed = {**result, "status": "failed: adb:X went away"}
    assert check_gate(failed, baseline, 0.02) == ["the bench did not finish (failed: adb:X went away)"]
    with pytest.raises(DeviceError, match="did not finish"):
        baseline_from(failed)


def test_gate_on_median_latency(tmp_path: Path) -> None:
    result, _, _ = written_phone_bench(tmp_path)
    baseline = baseline_from(result)
    assert check_gate(result, baseline, 0.0) == []
    slower = {name: {"value": v["value"] * 0.9} for name, v in baseline["variants"].items()}
    failures = check_gate(result, {**baseline, "variants": slower}, 0.05)
    assert len(failures) == 2 and all("µs (median) is +11.11% over the baseline" in f for f in failures)


# --- baselines: history, and no overwrite without --force --------------------------------------------------------


def test_a_replaced_baseline_passes_its_history_and_figures_on(tmp_path: Path) -> None:
    first = counted(tmp_path, 1000, 400, "first")
    second = counted(tmp_path, 1010, 500, "second")
    third = counted(tmp_path, 990, 300, "third")
    old = baseline_from(first)
    new = baseline_from(second, old)
    assert new["variants"]["compressed"]["value"] == 500
    assert new["history"] == [
        {"date": first["created"], "values": {"dense": 1000, "compressed": 400}, "speedup": 2.5},
        {"date": second["created"], "values": {"dense": 1010, "compressed": 500}, "speedup": 2.02},
    ]
    assert baseline_from(third, new)["history"] == [
        *new["history"], {"date": third["created"], "values": {"dense": 990, "compressed": 300}, "speedup": 3.3}]
    legacy = {k: v for k, v in old.items() if k != "history"} | {"made_with": "ac bench RUN --save-baseline B"}
    replaced = baseline_from(second, legacy)  # a file from before histories: its figures, date unknown
    assert [(h["date"], h["values"]) for h in replaced["history"]] == [
        (None, {"dense": 1000, "compressed": 400}), (second["created"], {"dense": 1010, "compressed": 500})]
    assert replaced["made_with"] == "ac bench RUN --save-baseline B"


class FakeRun:
    """`ac bench RUN --bench qemu-arm64` with the device, the compile and the output check replaced: a run folder
    and a CountingDevice whose counts a test sets; `measured` lists the artifacts it measured."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = tmp_path / "run"
        self.dir.mkdir()
        (self.dir / "config.toml").write_text("")
        self.counts = {"dense": 1000, "compressed": 400}
        self.measured: list[str] = []
        built = artifacts(tmp_path / "built")
        fake = self

        class Recording(CountingDevice):
            def measure(self, artifact: Path, settings: BenchSettings, on_sample: Any = None) -> dict[str, Any]:
                fake.measured.append(artifact.name)
                return super().measure(artifact, settings, on_sample)

        monkeypatch.setattr(bench_run_module, "get_device", lambda name: Recording(self.counts))
        monkeypatch.setattr(bench_run_module, "run_artifacts", lambda run_dir, target: built)
        monkeypatch.setattr(bench_run_module, "check_outputs", lambda *a: {"status": "not checked: fake device"})

    def ac_bench(self, *args: str) -> tuple[int, str]:
        """Exit code and output (rich's line wrapping undone)."""
        result = CliRunner().invoke(main, ["bench", str(self.dir), "--bench", "qemu-arm64", *args],
                                    catch_exceptions=False)  # fmt: skip
        return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    return FakeRun(tmp_path, monkeypatch)


def test_save_baseline_refuses_an_existing_file_without_force(fake_run: FakeRun, tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    code, said = fake_run.ac_bench("--save-baseline", str(path))
    assert code == 0 and fake_run.measured == ["dense", "compressed"], said
    saved = path.read_bytes()
    fake_run.measured.clear()
    fake_run.counts["compressed"] = 500
    code, said = fake_run.ac_bench("--save-baseline", str(path))
    assert code == 2 and said.endswith(
        f"error: --save-baseline {path}: the file exists; add --force to overwrite it (its figures are kept in the "
        "new file's history)"
    )
    assert path.read_bytes() == saved and fake_run.measured == []  # refused before anything ran


def test_save_baseline_with_force_replaces_the_figures_and_keeps_the_old_ones_in_history(
    fake_run: FakeRun, tmp_path: Path
) -> None:
    path = tmp_path / "baseline.json"
    assert fake_run.ac_bench("--save-baseline", str(path))[0] == 0
    old = json.loads(path.read_text())
    fake_run.counts.update(dense=1200, compressed=300)
    code, said = fake_run.ac_bench("--save-baseline", str(path), "--force")
    assert code == 0, said
    new = json.loads(path.read_text())
    assert {k: v["value"] for k, v in new["variants"].items()} == {"dense": 1200, "compressed": 300}
    assert [(h["values"], h["speedup"]) for h in new["history"]] == [
        ({"dense": 1000, "compressed": 400}, 2.5), ({"dense": 1200, "compressed": 300}, 4.0)]
    assert new["history"][0] == old["history"][0]  # the old file's own history, date and all
    created = json.loads((fake_run.dir / "bench" / "qemu-arm64.json").read_text())["created"]
    assert new["history"][1]["date"] == created
    fake_run.counts.update(dense=1100)
    assert fake_run.ac_bench("--save-baseline", str(path), "--force")[0] == 0
    assert json.loads(path.read_text())["history"][:2] == new["history"]  # carried over again, not rewritten
    (tmp_path / "notes.json").write_text("my notes")
    code, said = fake_run.ac_bench("--save-baseline", str(tmp_path / "notes.json"), "--force")
    assert code == 2 and "not a baseline file" in said and (tmp_path / "notes.json").read_text() == "my notes"


def test_check_reads_a_baseline_with_history(fake_run: FakeRun, tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    assert fake_run.ac_bench("--save-baseline", str(path))[0] == 0
    fake_run.counts.update(compressed=300)
    assert fake_run.ac_bench("--save-baseline", str(path), "--force")[0] == 0
    assert len(json.loads(path.read_text())["history"]) == 2
    code, said = fake_run.ac_bench("--check", str(path), "--tolerance", "0.02")
    assert code == 0 and "gate passed" in said, said
    fake_run.counts.update(compressed=400)  # the history's older figure: slower than the baseline now
    code, said = fake_run.ac_bench("--check", str(path), "--tolerance", "0.02")
    assert code == 2 and "compressed: 400 instructions is +33.33% over the baseline 300" in said
    committed = json.loads(COMMITTED.read_text())  # the committed baseline carries its history too
    assert committed["history"][-1]["values"] == {k: v["value"] for k, v in committed["variants"].items()}
    fake_run.counts.update({k: v["value"] for k, v in committed["variants"].items()})
    code, said = fake_run.ac_bench("--check", str(COMMITTED))
    assert code == 0 and "gate passed" in said, said
    fake_run.counts["compressed"] = round(1.03 * fake_run.counts["compressed"])
    code, said = fake_run.ac_bench("--check", str(COMMITTED))
    assert code == 2 and "compressed: 262,780 instructions is +3.00% over the baseline 255,126" in said, said
