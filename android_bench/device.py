"""The one interface every bench device implements (android_bench/README.md).

An *artifact* is a directory holding `runner` (the static C++ runner with the model linked in) and
`manifest.json` (written by `ac compile`). Every device runs the same command line in that directory::

    ./runner --manifest manifest.json --warmup W --runs N --min-seconds S --threads T [--seed K]

and the runner prints JSON lines on stdout, one per event (android_bench/runner/README.md)::

    {"event": "start", "runner": "ac_runner", "version": 1, "threads": 4, "warmup": 10, "runs": 50, ...}
    {"event": "sample", "index": 0, "us": 1234.5}        # one per timed run, printed as it finishes
    {"event": "done", "runs": 50, "total_us": 61725.0}

so a device that goes away mid-run still leaves the samples printed so far.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from android_bench.errors import DeviceError


@dataclass(frozen=True)
class BenchSettings:
    """How long to measure; maps 1:1 to `ac bench` flags."""

    warmup: int = 10  # untimed runs first
    runs: int = 50  # at least this many timed runs ...
    min_seconds: float = 2.0  # ... and at least this much timed wall-clock
    threads: int = 0  # 0: every big core (adb) / every core (host)
    cooldown_s: float = 10.0  # idle time between two artifacts on a phone
    seed: int = 0  # random input fill


class Device(ABC):
    """A place that runs artifacts: `host`, `qemu-arm64`, `callgrind`, `adb:<serial>` (and a fake one in tests)."""

    name: str  # as given to `ac bench --bench`
    arch: str  # "x86_64" or "aarch64": which compiled artifacts it can run
    metric: str  # "latency_us" (samples, wall-clock) or "instructions" (deterministic counts)
    profiles = False  # whether profile_cells measures (latency tables), or says why it cannot

    @abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """What this device is (model, SoC, OS version, build fingerprint, CPU)."""

    @abstractmethod
    def thermal(self) -> dict[str, float]:
        """Temperature of every thermal zone in °C, keyed by zone type; empty where there are none."""

    @abstractmethod
    def measure(
        self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        """Run one artifact; returns {"metric": ..., ...} ("samples_us" for latency, "instructions" for counts).

        Calls `on_sample(us)` for every timed sample as it arrives, so callers can keep partial results
        when the device goes away (then a DeviceError is raised).
        """

    def profile_cells(self, runner: Path, cells: Path, settings: BenchSettings) -> list[float]:
        """The cost of every cell of a ``--conv-table`` file (one conv shape per line) in this device's metric,
        measured by the table runner in the folder ``runner`` (the toolchain that drives this harness builds both)."""
        raise DeviceError(
            f"{self.name} cannot build latency tables (it has no per-kernel-call measurement); "
            "profile on host (time) or qemu-arm64 (aarch64 instruction counts)"
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release locks and temporary files."""


class CountingDevice(Device):
    """A device measured in executed instructions: one inference costs count(N + 1) - count(N)."""

    metric = "instructions"

    def __init__(self, base_runs: int = 1) -> None:
        self.base_runs = base_runs  # N

    def thermal(self) -> dict[str, float]:
        return {}  # counts do not depend on temperature

    def measure(
        self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        counts = {n: self.count(artifact, n, settings.seed) for n in (self.base_runs, self.base_runs + 1)}
        per_inference = counts[self.base_runs + 1] - counts[self.base_runs]
        if per_inference <= 0:
            raise DeviceError(f"instruction counts of {artifact} did not grow with the run count: {counts}")
        return {"metric": self.metric, "instructions": per_inference,
                "counts": {str(n): c for n, c in counts.items()},
                "startup_instructions": counts[self.base_runs] - self.base_runs * per_inference}  # fmt: skip

    @abstractmethod
    def count(self, artifact: Path, runs: int, seed: int = 0) -> int:
        """Instructions of one whole runner process doing `runs` inferences (no warm-up, one thread)."""
