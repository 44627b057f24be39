"""AdbDevice against recorded phones (android_bench/adb.py through android_bench/fake.py)."""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ac_toolchain.errors import DeviceError
from android_bench.adb import REMOTE_ROOT, AdbDevice
from android_bench.bench import bench
from android_bench.device import BenchSettings
from android_bench.fake import FakeTransport, split_commands
from android_bench.stats import thermal_delta

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = BenchSettings(runs=20, cooldown_s=0)
SHELL_VERBS = {"mkdir", "cd", "sha256sum", "chmod", "taskset", "echo", "rm"}  # all AdbDevice may run


def make_artifact(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    files = {"runner": b"\x7fELF aarch64 runner", "manifest.json": b'{"model": "resnet18"}', **(extra or {})}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def phone(fixture: str | Path = "written-like-pixel7", **kw: object) -> tuple[AdbDevice, FakeTransport]:
    fake = FakeTransport(FIXTURES / fixture, **kw)  # type: ignore[arg-type]
    return AdbDevice(fake.serial, transport=fake), fake


def runner_lines(fixture: str) -> list[float]:
    events = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    return [e["us"] for e in events if e["event"] == "sample"]


def run_command(fake: FakeTransport) -> list[tuple[str, list[str]]]:
    return split_commands(next(c for c in reversed(fake.commands) if "./runner" in c))


# --- fingerprint, big cores, thermal ---------------------------------------------------------------------------


def test_fingerprint_of_a_phone_written_like_a_pixel_7() -> None:
    device, _ = phone()
    assert device.fingerprint() == {
        "model": "Pixel 7",
        "manufacturer": "Google",
        "soc": "GS201",
        "android": "14",
        "sdk": "34",
        "build_fingerprint": "google/panther/panther:14/UQ1A.240205.004/11269751:user/release-keys",
        "abi": "arm64-v8a",
        "serial": "FAKE0001",
        "cpu_clusters": "4x1803MHz + 2x2348MHz + 2x2850MHz",
        "big_cores": "4,5,6,7",
        "big_core_mask": "f0",
    }
    assert (device.name, device.arch, device.metric) == ("adb:FAKE0001", "aarch64", "latency_us")


def test_soc_falls_back_to_the_board_platform_before_android_12() -> None:
    fp = phone("written-like-pixel2")[0].fingerprint()
    assert (fp["model"], fp["soc"], fp["android"], fp["sdk"]) == ("Pixel 2", "msm8998", "11", "30")


def cpufreq(*clusters: tuple[int, int | None]) -> str:
    """(count, kHz or None for offline) per cluster, in cpu order, in the format CPUFREQ_CMD prints."""
    khz = [k for count, k in clusters for _ in range(count)]
    return "".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq {k or ''}\n" for i, k in enumerate(khz))


LAYOUTS = {
    "written-like-pixel7 2+2+4": (None, [4, 5, 6, 7], "f0"),
    "written-like-pixel2 4+4": (None, [4, 5, 6, 7], "f0"),
    "1+3+4 (Snapdragon 865)": (cpufreq((4, 1804800), (3, 2419200), (1, 2841600)), [4, 5, 6, 7], "f0"),
    "2+6 (Snapdragon 730)": (cpufreq((6, 1804800), (2, 2208000)), [6, 7], "c0"),
    "homogeneous 8 x A53": (cpufreq((8, 1800000)), list(range(8)), "ff"),
    "4+4, cpu7 offline": (cpufreq((4, 1900800), (3, 2457600), (1, None)), [4, 5, 6], "70"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_big_cores_pin_the_runner_and_set_its_threads(layout: str, tmp_path: Path) -> None:
    text, cores, mask = LAYOUTS[layout]
    fixture = tmp_path / "phone"
    shutil.copytree(FIXTURES / layout.split()[0] if text is None else FIXTURES / "written-like-pixel7", fixture)
    if text is not None:
        (fixture / "cpufreq.txt").write_text(text)
    device, fake = phone(fixture)
    assert device.big_cores() == cores and device.fingerprint()["big_core_mask"] == mask
    device.measure(make_artifact(tmp_path / "art"), SETTINGS)
    _, _, (_, taskset), _ = run_command(fake)
    assert taskset[:3] == ["taskset", mask, "./runner"]
    assert taskset[taskset.index("--threads") + 1] == str(len(cores))


def test_explicit_thread_count_wins_over_the_big_core_count(tmp_path: Path) -> None:
    device, fake = phone()
    device.measure(make_artifact(tmp_path), BenchSettings(threads=1))
    assert fake.runs[-1][fake.runs[-1].index("--threads") + 1] == "1"


def test_thermal_zones_in_celsius_before_and_after() -> None:
    device, _ = phone()
    before, after = device.thermal(), device.thermal()
    assert len(before) == 13 and "cellular-emergency" not in before  # its read fails on this phone
    assert before["BIG"] == 41.25 and before["VIRTUAL-SKIN"] == 34.9
    delta = thermal_delta(before, after)
    assert delta["BIG"] == 11.625 and delta["battery"] == 1.2


def test_thermal_of_an_old_kernel_in_whole_degrees_with_a_repeated_zone_type() -> None:
    temps = phone("written-like-pixel2")[0].thermal()
    assert temps["tsens_tz_sensor0"] == 38.0 and temps["pm8998_tz"] == 37.421
    assert (temps["bms"], temps["bms@thermal_zone7"]) == (30.1, 30.4) and "battery" not in temps


# --- push, run, clean up ---------------------------------------------------------------------------------------


def test_measure_pushes_pins_and_streams_the_samples(tmp_path: Path) -> None:
    device, fake = phone()
    got: list[float] = []
    out = device.measure(make_artifact(tmp_path, {"lib/params.bin": b"\x01" * 64}), SETTINGS, got.append)
    remote = out["remote_dir"]
    assert remote.startswith(REMOTE_ROOT + "/") and len(remote.rsplit("/", 1)[1]) == 16
    assert sorted(out["pushed"]) == ["lib/params.bin", "manifest.json", "runner"]
    assert fake.files[f"{remote}/lib/params.bin"] == b"\x01" * 64
    assert got == out["samples_us"] == runner_lines("written-like-pixel7/runner-0.jsonl")
    assert out["metric"] == "latency_us" and out["runner"]["done"]["runs"] == 20 and out["cpu_mask"] == "f0"
    assert run_command(fake) == [
        ("", ["cd", remote]),
        ("&&", ["chmod", "755", "runner"]),
        ("&&", ["taskset", "f0", "./runner", "--manifest", "manifest.json", "--warmup", "10", "--runs", "20",
                "--min-seconds", "2.0", "--threads", "4", "--seed", "0"]),
        (";", ["echo", "__AC_EXIT__=$?"]),
    ]  # fmt: skip


def test_second_measure_pushes_nothing_and_a_changed_file_is_pushed_again(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path)
    device, fake = phone()
    remote = device.measure(artifact, SETTINGS)["remote_dir"]
    assert len(fake.pushes) == 2
    assert device.measure(artifact, SETTINGS)["pushed"] == []
    assert AdbDevice(fake.serial, transport=fake).measure(artifact, SETTINGS)["pushed"] == []  # a later bench too
    fake.files[f"{remote}/manifest.json"] = b"truncated"  # e.g. an earlier push was cut off
    assert device.measure(artifact, SETTINGS)["pushed"] == ["manifest.json"]
    (artifact / "runner").write_bytes(b"\x7fELF rebuilt runner")  # a new artifact gets its own folder
    out = device.measure(artifact, SETTINGS)
    assert out["remote_dir"] != remote and sorted(out["pushed"]) == ["manifest.json", "runner"]
    assert len(fake.pushes) == 5


def test_paths_with_spaces_and_quotes_reach_the_shell_quoted(tmp_path: Path) -> None:
    root = "/data/local/tmp/ac test/it's'; rm -rf / #"
    evil = "weights '; rm -rf / #.bin"
    artifact = make_artifact(tmp_path / 'my "model" dir', {evil: b"w", "sub dir/a $(reboot).json": b"{}"})
    fake = FakeTransport(FIXTURES / "written-like-pixel7")
    device = AdbDevice(fake.serial, transport=fake, remote_root=root)
    out = device.measure(artifact, SETTINGS)
    remote = out["remote_dir"]
    assert remote.startswith(root + "/") and len(out["samples_us"]) == 20
    assert fake.files[f"{remote}/{evil}"] == b"w" and f"{remote}/sub dir/a $(reboot).json" in fake.files
    assert device.measure(artifact, SETTINGS)["pushed"] == []  # the odd names came back from sha256sum intact
    device.cleanup()
    shell = [c for c in fake.commands if "cpufreq" not in c and "thermal" not in c]
    assert len(shell) == 5
    for cmd in shell:
        assert {argv[0] for _, argv in split_commands(cmd)} <= SHELL_VERBS, cmd
        assert ["rm", "-rf", "/"] not in [argv for _, argv in split_commands(cmd)]
    listing, run, cleanup = shlex.split(shell[0]), shlex.split(shell[1]), shlex.split(shell[-1])
    assert remote in listing and evil in listing and "sub dir/a $(reboot).json" in listing
    assert run[:2] == ["cd", remote] and cleanup == ["rm", "-rf", "--", remote]
    assert not any(path.startswith(root) for path in fake.files)


def test_cleanup_removes_only_what_this_device_pushed(tmp_path: Path) -> None:
    device, fake = phone()
    fake.files["/data/local/tmp/other/keep.bin"] = b"not ours"
    remote_a = device.measure(make_artifact(tmp_path / "a"), SETTINGS)["remote_dir"]
    remote_b = device.measure(make_artifact(tmp_path / "b", {"x": b"1"}), SETTINGS)["remote_dir"]
    device.cleanup()
    assert fake.commands[-1] == f"rm -rf -- {remote_a} {remote_b}"
    assert list(fake.files) == ["/data/local/tmp/other/keep.bin"]
    n = len(fake.commands)
    device.cleanup()  # nothing left to remove: no command
    assert len(fake.commands) == n


# --- failures --------------------------------------------------------------------------------------------------


def test_unplugged_mid_run_says_k_of_n_and_bench_keeps_the_k_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AC_CACHE_DIR", str(tmp_path / "cache"))
    device, _ = phone(unplug_after=6)  # the start line, then 5 samples
    out_json = tmp_path / "run" / "bench" / "adb_FAKE0001.json"
    with pytest.raises(DeviceError) as err:
        bench(device, {"dense": make_artifact(tmp_path / "art")}, SETTINGS, out_json)
    message = str(err.value)
    assert "adb:FAKE0001 went away after 5 of 20 samples" in message and "device 'FAKE0001' not found" in message
    assert f"the 5 samples so far are saved in {out_json}" in message and "adb devices" in message
    saved = json.loads(out_json.read_text())
    assert saved["status"].startswith("failed: adb:FAKE0001 went away after 5 of 20 samples")
    dense = saved["variants"]["dense"]
    assert dense["samples_us"] == runner_lines("written-like-pixel7/runner-0.jsonl")[:5] and dense["stats"]["n"] == 5
    assert dense["thermal_before"]["BIG"] == 41.25 and "thermal_after" not in dense
    with pytest.raises(DeviceError, match="not reachable"):  # and the phone stays gone
        device.thermal()


class Truncating(FakeTransport):
    """adb closes the stream without an error when the phone vanishes: the lines simply stop."""

    def __init__(self, fixtures: Path, lines: int) -> None:
        super().__init__(fixtures)
        self.lines = lines

    def shell_stream(self, cmd: str) -> Iterator[str]:
        yield from itertools.islice(super().shell_stream(cmd), self.lines)


def test_a_stream_that_just_stops_is_a_lost_phone(tmp_path: Path) -> None:
    fake = Truncating(FIXTURES / "written-like-pixel7", lines=4)
    got: list[float] = []
    with pytest.raises(DeviceError, match=r"went away after 3 of 20 samples: the output stopped; .*adb devices"):
        AdbDevice(fake.serial, transport=fake).measure(make_artifact(tmp_path), SETTINGS, got.append)
    assert len(got) == 3


def test_a_phone_lost_after_the_done_event_still_gave_a_complete_run(tmp_path: Path) -> None:
    fake = Truncating(FIXTURES / "written-like-pixel7", lines=22)  # start, 20 samples, done; no exit marker
    assert len(AdbDevice(fake.serial, transport=fake).measure(make_artifact(tmp_path), SETTINGS)["samples_us"]) == 20


def test_a_runner_that_fails_on_the_phone_reports_its_status_and_output(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path)
    (artifact / "manifest.json").unlink()  # the fake refuses to run without it
    device, _ = phone()
    with pytest.raises(DeviceError, match=r"runner on adb:FAKE0001 exited with status 126 after 0 samples: .*denied"):
        device.measure(artifact, SETTINGS)
