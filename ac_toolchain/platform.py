"""Which machine does what, for each compile target: the one platform table.

One row per target (``ac targets`` prints it) names the compile target, the bench device ``--bench auto`` picks
(also where its latency tables are measured) and how its compiled artifacts run on this machine to check their
outputs. One row per bench-device kind names the compile target its static runners are built for and how their
outputs are read back here. :func:`resolve_platform` turns ``--target`` and ``--bench`` into a :class:`Platform`
once, before the run directory exists; the run carries it, and nothing downstream maps a target string to a device
again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ac_toolchain.compile.targets import TARGETS, Target, get_target
from ac_toolchain.compile.tuning import check_tunable
from ac_toolchain.compile.tvm_build import check_toolchain, load_host_module
from ac_toolchain.errors import ConfigError, DeviceError
from android_bench.device import Device
from android_bench.devices import check_name, get_device
from android_bench.qemu import CPU, QEMU

Runner = Callable[[Path, np.ndarray], np.ndarray]  # (artifact folder, input) → outputs


def _on_host(out_dir: Path, x: np.ndarray) -> np.ndarray:
    return load_host_module(out_dir)(x)


def _under_qemu(out_dir: Path, x: np.ndarray) -> np.ndarray:
    from android_bench.qemu import QemuDevice

    return QemuDevice().infer(out_dir, [x])[0]


@dataclass(frozen=True)
class PlatformRow:
    target: Target  # the compile target (how TVM builds; its cross compiler)
    auto_bench: str | None  # the bench device of `--bench auto`; None: no bench here
    check_here: Runner | None = None  # runs the compiled artifact on this machine; None: it cannot


PLATFORMS: dict[str, PlatformRow] = {
    row.target.name: row
    for row in (
        PlatformRow(TARGETS["x86"], "host", _on_host),
        PlatformRow(TARGETS["x86-avx2"], "host"),
        PlatformRow(TARGETS["arm64"], "qemu-arm64"),  # a shared aarch64 .so: this process cannot load it
        PlatformRow(TARGETS["android-arm64"], "qemu-arm64", _under_qemu),
        PlatformRow(TARGETS["opencl"], None),  # source only: no GPU here
    )
}


@dataclass(frozen=True)
class BenchRow:
    runner_target: str | None  # the compile target of its static runners; None: by the device's architecture
    read_back: tuple[str, ...] | None  # command prefix that runs a runner here to read its outputs; None: cannot


BENCH_DEVICES: dict[str, BenchRow] = {  # keyed as android_bench/devices.py: the name before the first ':'
    "host": BenchRow(None, ()),
    "qemu-arm64": BenchRow("android-arm64", (QEMU, *CPU)),
    "callgrind": BenchRow("x86-avx2", ()),  # valgrind runs AVX2 but not AVX-512
    "adb": BenchRow("android-arm64", None),
}
BY_ARCH = {"x86_64": "x86", "aarch64": "android-arm64"}


@dataclass(frozen=True)
class Platform:
    target: Target  # the compile target
    bench: str | None  # the bench device `ac compress` benches on; None: no bench
    latency_device: str | None  # where latency tables are measured; None: none here

    @property
    def row(self) -> PlatformRow:
        return PLATFORMS[self.target.name]

    @property
    def checks_here(self) -> bool:
        return self.row.check_here is not None

    def check_outputs_here(self, out_dir: Path, x: np.ndarray) -> np.ndarray | None:
        """The compiled artifact's outputs on ``x``, run on this machine; None where it cannot run here."""
        run = self.row.check_here
        return None if run is None else run(out_dir, x)

    def check(self, tune_trials: int = 0) -> None:
        """What the run needs here, before any training: the cross compiler, a target that runs here when
        MetaSchedule is to tune (it times candidates on this machine), and the bench device."""
        check_toolchain(self.target)
        check_tunable(self.target, tune_trials)
        if self.bench is not None:  # the bench device is there (a phone attached, qemu or valgrind installed)
            device = get_device(self.bench)
            try:
                device.fingerprint()
            finally:
                device.close()

    def require_latency_device(self) -> str:
        """The device latency tables are measured on; a ConfigError naming the targets and devices that have one."""
        if self.latency_device is None:
            able = [t for t, row in PLATFORMS.items() if row.auto_bench]
            devices = sorted({row.auto_bench for row in PLATFORMS.values() if row.auto_bench})
            raise ConfigError(f"--latency-x needs a device to measure on; target {self.target.name} has none here: "
                              f"use --target {' or '.join(able)}, or --bench {' or '.join(devices)}, "
                              "or a --params-x / --flops-x goal instead")  # fmt: skip
        return self.latency_device


def resolve_platform(target: str, bench: str = "auto") -> Platform:
    """The platform of ``--target`` and ``--bench`` (auto, none or a device name); a TargetError for an unknown
    target, a DeviceError for an unknown bench device (the toolchain is checked by :meth:`Platform.check`)."""
    t = get_target(target)
    auto = PLATFORMS[t.name].auto_bench
    chosen = auto if bench == "auto" else None if bench == "none" else bench
    if chosen is not None:
        check_name(chosen)
    return Platform(t, chosen, chosen or auto)


def bench_row(device: Device) -> BenchRow:
    return BENCH_DEVICES.get(device.name.partition(":")[0], BenchRow(None, None))


def runner_target(device: Device) -> Target:
    """The compile target of the device's static runners, linked statically (loader-independent)."""
    name = bench_row(device).runner_target or BY_ARCH.get(device.arch)
    if name is None:
        raise DeviceError(f"{device.name} is a {device.arch} machine; AutoCompress builds runners for "
                          f"{', '.join(BY_ARCH)} only")  # fmt: skip
    return dataclasses.replace(get_target(name), link="static")
