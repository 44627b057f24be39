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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ac_toolchain import native
from ac_toolchain.errors import DeviceError
from android_bench.device import CountingDevice
from android_bench.local import counted_run, infer

QEMU = "qemu-aarch64"
INSTALL_HINT = "install it with: bash scripts/install-system-deps.sh (Debian: apt-get install qemu-user)"


class QemuDevice(CountingDevice):
    name = "qemu-arm64"
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
        return counted_run(artifact, runs, seed, lambda out: [QEMU, "-plugin", f"{self.plugin()},out={out}"],
                           lambda out: self._read(out, artifact))  # fmt: skip

    @staticmethod
    def _read(out: Path, artifact: Path) -> int:
        match = re.fullmatch(r"insns (\d+)\s*", out.read_text() if out.is_file() else "")
        if match is None:
            raise DeviceError(f"the qemu plugin wrote no instruction count for {artifact}")
        return int(match.group(1))

    def infer(self, artifact: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One inference under qemu (for checking outputs against torch)."""
        return infer(artifact, inputs, [QEMU])

    def plugin(self) -> Path:
        """The plugin, built with the host kernels (cached)."""
        self._plugin = self._plugin or native.build("host") / "libac_qemu_insn.so"
        return self._plugin
