"""`adb:<serial>`: a real phone. Push the artifact once, pin the runner to the big cores, stream its samples.

Every path and argument that reaches the phone's shell goes through `shlex.quote` (the phone runs mksh/toybox,
POSIX enough for single quotes), so artifact names with spaces or quotes work and cannot inject commands.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from android_bench.device import BenchSettings, Device
from android_bench.errors import DeviceError
from android_bench.protocol import artifact_digest, artifact_hashes, parse_runner_output, runner_command
from android_bench.stats import thermal_zones
from android_bench.transport import ADB_HINT, AdbTransport, Transport

REMOTE_ROOT = "/data/local/tmp/ac"  # the one place shell users may write and execute on a stock phone
GETPROP_CMD = "getprop"
CPUFREQ_CMD = (
    'for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do echo "$f $(cat $f 2>/dev/null)"; done'
)
THERMAL_CMD = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    'printf "%s\\t%s\\t%s\\n" "${z##*/}" "$(cat $z/type 2>/dev/null)" "$(cat $z/temp 2>/dev/null)"; done'
)
EXIT_MARK = "__AC_EXIT__="  # echoed after the runner: its absence means the phone went away mid-run
PROPS = {  # fingerprint key: getprop keys, first non-empty wins
    "model": ("ro.product.model",),
    "manufacturer": ("ro.product.manufacturer",),
    "soc": ("ro.soc.model", "ro.board.platform", "ro.hardware"),
    "android": ("ro.build.version.release",),
    "sdk": ("ro.build.version.sdk",),
    "build_fingerprint": ("ro.build.fingerprint",),
    "abi": ("ro.product.cpu.abi",),
}


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[ro.product.model]: [Pixel 7]` lines) → {key: value}."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, flags=re.MULTILINE))


def parse_max_freqs(text: str) -> dict[int, int]:
    """CPUFREQ_CMD output → {cpu: cpuinfo_max_freq in kHz}; offline cores (empty reading) are left out."""
    return {int(cpu): int(khz) for cpu, khz in re.findall(r"/cpu(\d+)/cpufreq/cpuinfo_max_freq (\d+)", text)}


def big_cores(max_freqs: dict[int, int]) -> list[int]:
    """Every core faster than the slowest cluster; all cores on a homogeneous CPU.

    The slowest cluster is the little (A5x) cores. Prime + big + little phones (Pixel 7: 2 x X1, 2 x A78,
    4 x A55) keep prime *and* big cores: together they are the "big" cores Android and ncnn schedule heavy
    threads on, and a single prime core would make multi-threaded runs meaningless.
    """
    if not max_freqs:
        raise DeviceError("the phone exposes no cpuinfo_max_freq under /sys/devices/system/cpu; cannot find big cores")
    slowest = min(max_freqs.values())
    faster = sorted(cpu for cpu, khz in max_freqs.items() if khz > slowest)
    return faster or sorted(max_freqs)


def cpu_mask(cores: Iterable[int]) -> str:
    """taskset's hex mask: cores 4-7 → 'f0'."""
    return format(sum(1 << c for c in cores), "x")


def parse_thermal(text: str) -> dict[str, float]:
    """THERMAL_CMD output (zone, type, temp separated by tabs) → {type: °C}."""
    rows = (line.split("\t") for line in text.splitlines())
    return thermal_zones((r[0], r[1].strip(), r[2]) for r in rows if len(r) == 3)


class _Watched:
    """Passes the runner's lines through, noting the exit marker, the last non-JSON lines (errors) and whether
    the transport lost the phone (then the lines just stop, as they do when adb drops an unplugged phone)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.exit_code: int | None = None
        self.other: deque[str] = deque(maxlen=8)
        self.lost: DeviceError | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self.lines:
                marker = re.fullmatch(re.escape(EXIT_MARK) + r"(\d+)", line.strip())
                if marker:
                    self.exit_code = int(marker[1])
                elif not line.lstrip().startswith("{"):
                    self.other.append(line)
                yield line
        except DeviceError as exc:
            self.lost = exc


class AdbDevice(Device):
    """A phone over adb. Artifacts live in `<remote_root>/<16-hex content hash>/`, so re-benching pushes nothing."""

    arch = "aarch64"
    metric = "latency_us"

    def __init__(self, serial: str, transport: Transport | None = None, remote_root: str = REMOTE_ROOT) -> None:
        self.serial = serial
        self.name = f"adb:{serial}"
        self.transport = transport if transport is not None else AdbTransport(serial)
        self.remote_root = remote_root.rstrip("/")
        self.pushed_dirs: list[str] = []  # what cleanup() removes
        self._freqs: dict[int, int] | None = None

    def max_freqs(self) -> dict[int, int]:
        """{cpu: max kHz}, read once: the clusters do not change while the phone is plugged in."""
        if self._freqs is None:
            self._freqs = parse_max_freqs(self.transport.shell(CPUFREQ_CMD))
        return self._freqs

    def big_cores(self) -> list[int]:
        return big_cores(self.max_freqs())

    def fingerprint(self) -> dict[str, str]:
        props = parse_getprop(self.transport.shell(GETPROP_CMD))
        found = {key: next((props[k] for k in keys if props.get(k)), "") for key, keys in PROPS.items()}
        freqs = list(self.max_freqs().values())
        return {
            **found,
            "serial": self.serial,
            "cpu_clusters": " + ".join(f"{freqs.count(f)}x{f // 1000}MHz" for f in sorted(set(freqs))),
            "big_cores": ",".join(map(str, self.big_cores())),
            "big_core_mask": cpu_mask(self.big_cores()),
        }

    def thermal(self) -> dict[str, float]:
        return parse_thermal(self.transport.shell(THERMAL_CMD))

    def push(self, artifact: Path) -> tuple[str, list[str]]:
        """Copy the files the phone lacks (or holds with another sha256); returns (remote dir, files pushed)."""
        hashes = artifact_hashes(artifact)
        remote = f"{self.remote_root}/{artifact_digest(hashes)}"
        have = self._remote_hashes(remote, hashes)
        pushed = [name for name, digest in hashes.items() if have.get(name) != digest]
        for name in pushed:
            self.transport.push(artifact / name, f"{remote}/{name}")
        if remote not in self.pushed_dirs:
            self.pushed_dirs.append(remote)
        return remote, pushed

    def _remote_hashes(self, remote: str, hashes: dict[str, str]) -> dict[str, str]:
        """One shell call: make the folders, then sha256sum the files already there (missing ones print errors)."""
        folders = sorted({f"{remote}/{name}".rsplit("/", 1)[0] for name in hashes})
        names = " ".join(shlex.quote(name) for name in hashes)
        out = self.transport.shell(
            f"mkdir -p -- {' '.join(map(shlex.quote, folders))} && cd {shlex.quote(remote)} && sha256sum -- {names}"
        )
        return {line[66:]: line[:64] for line in out.splitlines() if re.match(r"[0-9a-f]{64}  ", line)}

    def measure(
        self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        remote, pushed = self.push(artifact)
        cores = self.big_cores()
        settings = dataclasses.replace(settings, threads=settings.threads or len(cores))
        argv = shlex.join(runner_command(settings))
        watched = _Watched(
            self.transport.shell_stream(
                f"cd {shlex.quote(remote)} && chmod 755 runner && taskset {cpu_mask(cores)} {argv}; echo {EXIT_MARK}$?"
            )
        )
        got: list[float] = []

        def sample(us: float) -> None:
            got.append(us)
            if on_sample is not None:
                on_sample(us)

        try:
            out = parse_runner_output(watched, sample)
        except DeviceError as exc:
            raise self._failure(watched, len(got), settings.runs, exc) from exc
        if watched.exit_code:  # None after a complete run: the phone left between 'done' and the marker
            raise self._failure(watched, len(got), settings.runs, None)
        return {
            "metric": self.metric,
            "samples_us": out["samples_us"],
            "runner": {"start": out["start"], "done": out["done"]},
            "remote_dir": remote,
            "pushed": pushed,
            "cpu_mask": cpu_mask(cores),
        }

    def _failure(self, watched: _Watched, got: int, runs: int, exc: DeviceError | None) -> DeviceError:
        """Tell a lost phone (no exit marker) from a runner that failed on it."""
        if watched.exit_code is None:
            why = str(watched.lost) if watched.lost else f"the output stopped; {ADB_HINT}"
            return DeviceError(f"{self.name} went away after {got} of {runs} samples: {why}")
        tail = " | ".join(watched.other) or str(exc)
        return DeviceError(
            f"the runner on {self.name} exited with status {watched.exit_code} after {got} samples: {tail}"
        )

    def cleanup(self) -> None:
        """Remove the artifact folders this device pushed (on request: keeping them makes the next bench fast)."""
        if self.pushed_dirs:
            self.transport.shell(f"rm -rf -- {' '.join(map(shlex.quote, self.pushed_dirs))}")
            self.pushed_dirs.clear()
