"""The `qemu-arm64` device: aarch64 artifacts under Debian's qemu-user, measured in guest instructions.

Wall-clock time under emulation says little about a phone, so this device counts the instructions the guest
executes with our qemu plugin (android_bench/qemu_plugin): deterministic to the instruction for a
single-threaded run, which makes it a CI latency gate. The count of one inference is the difference between a
run of N+1 and a run of N inferences, which cancels start-up and model loading.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from android_bench.device import BenchSettings, CountingDevice
from android_bench.errors import DeviceError
from android_bench.local import counted_run, infer, run_runner
from android_bench.protocol import parse_table_output, table_command

QEMU = "qemu-aarch64"
# The emulated CPU: every feature qemu implements, dot product (sdot, which the int8 kernel multiplies with)
# included; said explicitly rather than left to the version's default.
CPU = ("-cpu", "max")
INSTALL_HINT = "install it with: bash scripts/install-system-deps.sh (Debian: apt-get install qemu-user)"


class QemuDevice(CountingDevice):
    name = "qemu-arm64"
    profiles = True
    arch = "aarch64"

    def __init__(self, base_runs: int = 1) -> None:
        if shutil.which(QEMU) is None:
            raise DeviceError(f"the qemu-arm64 device needs {QEMU}, not found; {INSTALL_HINT}")
        super().__init__(base_runs)
        self._plugin: Path | None = None

    def fingerprint(self) -> dict[str, str]:
        version = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        return {"emulator": version, "counter": "ac_qemu_insn (TCG inline count of executed guest instructions)",
                "host_cpu": platform.processor() or platform.machine()}  # fmt: skip

    def count(self, artifact: Path, runs: int, seed: int = 0) -> int:
        """Guest instructions of one whole runner process doing `runs` inferences (no warm-up, one thread)."""
        return counted_run(artifact, runs, seed, lambda out: [QEMU, *CPU, "-plugin", f"{self.plugin()},out={out}"],
                           lambda out: self._read(out, artifact))  # fmt: skip

    @staticmethod
    def _read(out: Path, artifact: Path) -> int:
        match = re.match(r"insns (\d+)\n", out.read_text() if out.is_file() else "")
        if match is None:
            raise DeviceError(f"the qemu plugin wrote no instruction count for {artifact}")
        return int(match.group(1))

    def profile_cells(self, runner: Path, cells: Path, settings: BenchSettings) -> list[float]:
        """Guest instructions of one kernel call per cell (after one warm-up call, one thread): the plugin's count
        between the marks around it, less what an empty pair of marks costs."""
        once = BenchSettings(warmup=1, runs=1, min_seconds=0.0, threads=1, seed=settings.seed)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "count.out"
            prefix = [QEMU, *CPU, "-plugin", f"{self.plugin()},out={out}"]
            stdout = run_runner(runner, table_command(once, str(cells.resolve())), prefix)
            n = len(parse_table_output(stdout.splitlines()))
            marks = [int(m) for m in re.findall(r"^mark (\d+)$", out.read_text(), flags=re.MULTILINE)]
        if len(marks) != 2 * n + 2:
            raise DeviceError(f"the qemu plugin recorded {len(marks)} marks for {n} cells (expected {2 * n + 2}); "
                              "rebuild the plugin (its sources changed?)")  # fmt: skip
        idle = marks[1] - marks[0]
        return [float(marks[2 * i + 3] - marks[2 * i + 2] - idle) for i in range(n)]

    def infer(self, artifact: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One inference under qemu (for checking outputs against torch)."""
        return infer(artifact, inputs, [QEMU, *CPU])

    def plugin(self) -> Path:
        """The counting plugin, from the source registered with :func:`use_plugin` (built once, cached)."""
        if self._plugin is None:
            if _plugin_source is None:
                raise DeviceError("the qemu-arm64 device counts with the plugin of android_bench/qemu_plugin: "
                                  "build it (CMake target ac_qemu_insn), register it with qemu.use_plugin")  # fmt: skip
            self._plugin = _plugin_source()
        return self._plugin


_plugin_source: Callable[[], Path] | None = None


def use_plugin(source: Callable[[], Path]) -> None:
    """Register how to get the counting plugin (the toolchain builds it with its host kernels, on first use)."""
    global _plugin_source
    _plugin_source = source
