"""The `callgrind` device: x86 artifacts run on this machine under valgrind, measured in executed instructions.

Wall-clock time on a shared 2-core machine is noisy; the instructions valgrind's callgrind counts are not, so
this device gives deterministic x86 figures beside the host's times (as qemu-arm64 does for aarch64). Valgrind
cannot run AVX-512 code, so its runners are built for the portable `x86-avx2` target (AVX2 + FMA kernels), not
for `-march=native`. One inference costs count(N + 1) - count(N), which cancels start-up and model loading.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from android_bench.device import CountingDevice
from android_bench.errors import DeviceError
from android_bench.local import counted_run

VALGRIND = "valgrind"
INSTALL_HINT = "install it with: bash scripts/install-system-deps.sh (Debian: apt-get install valgrind)"


def callgrind_prefix(out: Path) -> list[str]:
    return [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out}", "--log-file=/dev/null"]


def read_total(out: Path, what: str) -> int:
    """The instruction total (``totals:`` / ``summary:`` line) of a callgrind output file."""
    text = out.read_text() if out.is_file() else ""
    match = re.search(r"^(?:totals|summary): (\d+)", text, re.MULTILINE)
    if match is None:
        raise DeviceError(f"callgrind wrote no instruction total for {what}")
    return int(match.group(1))


def count_command(cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Instructions callgrind counts for any command (benchmarks use it for onnxruntime in a python process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run([*callgrind_prefix(out), *cmd], env=env, capture_output=True, text=True)
        if done.returncode:
            raise DeviceError(f"{' '.join(cmd)} under callgrind exited with {done.returncode}: {done.stderr[-800:]}")
        return read_total(out, " ".join(cmd))


class CallgrindDevice(CountingDevice):
    name = "callgrind"
    arch = "x86_64"

    def __init__(self, base_runs: int = 1) -> None:
        if shutil.which(VALGRIND) is None:
            raise DeviceError(f"the callgrind device needs {VALGRIND}, not found; {INSTALL_HINT}")
        if platform.machine() not in ("x86_64", "AMD64"):
            raise DeviceError(f"the callgrind device runs x86 artifacts on this machine, which is {platform.machine()}")
        super().__init__(base_runs)

    def fingerprint(self) -> dict[str, str]:
        version = subprocess.run([VALGRIND, "--version"], capture_output=True, text=True).stdout.strip()
        return {"emulator": version, "counter": "callgrind (instructions executed, Ir)",
                "host_cpu": platform.processor() or platform.machine()}  # fmt: skip

    def count(self, artifact: Path, runs: int, seed: int = 0) -> int:
        return counted_run(artifact, runs, seed, callgrind_prefix, lambda out: read_total(out, str(artifact)))
