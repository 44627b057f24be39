"""`host`: this machine. Runs the artifact's runner as a subprocess and reads its JSON lines as they come."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from android_bench.device import BenchSettings, Device
from android_bench.errors import DeviceError
from android_bench.local import run_runner
from android_bench.protocol import parse_runner_output, parse_table_output, runner_command, table_command
from android_bench.stats import thermal_zones

ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}  # platform → artifact arch
THERMAL_ROOT = Path("/sys/class/thermal")


def _first_match(path: Path, pattern: str) -> str:
    """First capture of `pattern` in a text file; empty when the file is missing (macOS, containers)."""
    try:
        found = re.search(pattern, path.read_text(errors="replace"), flags=re.MULTILINE)
    except OSError:
        return ""
    return found[1].strip().strip('"') if found else ""


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # a zone whose sensor is off fails with EINVAL/ENODATA: skipped like a junk reading
        return ""


class HostDevice(Device):
    name = "host"
    profiles = True
    metric = "latency_us"

    def __init__(self) -> None:
        machine = platform.machine().lower()
        self.arch = ARCH.get(machine, machine)

    def fingerprint(self) -> dict[str, str]:
        return {
            "machine": self.arch,
            "cpu": _first_match(Path("/proc/cpuinfo"), r"^model name\s*:(.*)$") or platform.processor(),
            "cpus": str(os.cpu_count() or 0),
            "os": _first_match(Path("/etc/os-release"), r"^PRETTY_NAME=(.*)$") or platform.platform(),
            "kernel": platform.release(),
        }

    def thermal(self) -> dict[str, float]:
        zones = sorted(THERMAL_ROOT.glob("thermal_zone*"))
        return thermal_zones((z.name, _read(z / "type"), _read(z / "temp")) for z in zones)

    def measure(
        self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        if not (artifact / "runner").is_file():
            raise DeviceError(f"{artifact} holds no 'runner'; build the artifact first (`ac compile`)")
        settings = dataclasses.replace(settings, threads=settings.threads or os.cpu_count() or 1)
        # stderr goes to a file, not a pipe: a chatty runner cannot then block while we wait on stdout
        with tempfile.TemporaryFile("w+") as err, _start(artifact, settings, err) as proc:
            assert proc.stdout is not None
            early: DeviceError | None = None
            try:
                out = parse_runner_output(proc.stdout, on_sample)
            except DeviceError as exc:
                early = exc
                proc.stdout.read()  # drain, so a runner still printing can finish
            if proc.wait() != 0:
                err.seek(0)
                tail = " | ".join(err.read().strip().splitlines()[-8:]) or "nothing on stderr"
                raise DeviceError(f"the runner in {artifact} exited with status {proc.returncode}: {tail}") from early
        if early is not None:
            raise early
        return {
            "metric": self.metric,
            "samples_us": out["samples_us"],
            "runner": {"start": out["start"], "done": out["done"]},
        }

    def profile_cells(self, runner: Path, cells: Path, settings: BenchSettings) -> list[float]:
        """The fastest of every cell's ``settings.runs`` timed kernel calls (after the warm-up), in microseconds:
        on a shared machine the median of two-thread calls of one shape moved 2-10x from run to run, the fastest
        a few percent (the toolchain's latency tables compare it with a model's fastest inference)."""
        settings = dataclasses.replace(settings, threads=settings.threads or os.cpu_count() or 1)
        out = run_runner(runner, table_command(settings, str(cells.resolve())))
        return [min(samples) for samples in parse_table_output(out.splitlines())]


def _start(artifact: Path, settings: BenchSettings, err: IO[str]) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(runner_command(settings), cwd=artifact, stdout=subprocess.PIPE, stderr=err, text=True)
    except OSError as exc:  # not executable, wrong architecture (ENOEXEC), ...
        raise DeviceError(f"cannot start {artifact / 'runner'} here ({exc}); is it built for this machine?") from exc
