"""Compile targets: how TVM builds for each (which machine benches it: ac_toolchain/platform.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ac_toolchain.errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    tvm_target: dict[str, Any]
    cross_compiler: str | None  # None: the host compiler
    link: str  # "shared" (a .so for this OS's loader) or "static" (system library linked into the runner)
    kernel_flags: tuple[str, ...] | None = None  # flags for kernels/ linked into model.so; None: no CPU kernels
    int8_flags: tuple[str, ...] = ()  # added for the int8 kernel's sources (after kernel_flags: the last -march wins)

    @property
    def runs_here(self) -> bool:
        """Whether its code runs on this machine's CPU (built with the host compiler)."""
        return self.cross_compiler is None

    @property
    def native(self) -> str:
        """The runner core (native.BUILDS) a static runner of this target links: one per architecture."""
        return "aarch64" if self.cross_compiler else "host"


# The int8 kernel on aarch64 multiplies with sdot (armv8.2-a dot product: phone cores from Cortex-A55 / A75 on);
# the fp32 kernel keeps plain armv8-a, so fp32 builds still run on older cores.
ARM_INT8 = ("-march=armv8.2-a+dotprod",)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("x86", "this machine's CPU (llvm)", {"kind": "llvm"}, None, "shared", ("-march=native",)),
        Target(
            # Runs on any x86 CPU with AVX2 + FMA (Haswell, Zen and later), and under valgrind (no AVX-512).
            "x86-avx2", "any x86 CPU with AVX2 and FMA (portable; valgrind can count it)",
            {"kind": "llvm", "mcpu": "haswell"}, None, "shared", ("-march=haswell",),
        ),
        Target(
            "arm64", "aarch64 Linux CPU with NEON",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
            "aarch64-linux-gnu-g++", "shared", ("-march=armv8-a",), ARM_INT8,
        ),
        Target(
            # A static executable needs no loader, so Android's kernel runs a glibc-linked one as any Linux does.
            "android-arm64", "aarch64 Android phone CPU (static runner with the model linked in)",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
            "aarch64-linux-gnu-g++", "static", ("-march=armv8-a",), ARM_INT8,
        ),
        Target("opencl", "mobile GPU via OpenCL (Mali / Adreno); compile-only here",
               {"kind": "opencl", "device": "mali"}, "aarch64-linux-gnu-g++", "source"),
    )
}  # fmt: skip


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise TargetError(f"unknown target '{name}'; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]
