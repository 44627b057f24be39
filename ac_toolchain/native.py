"""Build and call the C++ kernels of ``kernels/`` (CMake), for the host or cross-compiled for aarch64.

Builds are cached under ``$AC_CACHE_DIR`` (default ``~/.cache/autocompress``) in a folder named after a hash of
the sources and the build kind, so a second call costs nothing and an edited kernel is rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ac_toolchain.errors import TargetError

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
TOOLCHAINS = {"host": None, "aarch64": ROOT / "cmake" / "aarch64-linux-gnu.cmake"}
INSTALL_HINT = "install the build tools with: bash scripts/install-system-deps.sh"


class ConvShape(ctypes.Structure):
    """Mirror of ``ac_conv_shape`` in kernels/include/ac/compact_conv.h."""

    _fields_ = [
        (name, ctypes.c_int32)
        for name in ("n", "c", "h", "w", "f", "k", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "oh", "ow", "relu")
    ]


MR = 8  # AC_CONV_MR: output channels per packed weight block


def pack_weights(weight: np.ndarray) -> np.ndarray:
    """[F, K] -> [ceil(F/MR), K, MR], zero rows past F: the layout ``ac_compact_conv2d`` reads."""
    f, k = weight.shape
    padded = np.zeros((-(-f // MR) * MR, k), np.float32)
    padded[:f] = weight
    return np.ascontiguousarray(padded.reshape(-1, MR, k).transpose(0, 2, 1))


@dataclass(frozen=True)
class Geometry:
    """Kernel size, stride, padding and dilation of one convolution (height, width)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        sizes = (h, w)
        return tuple(  # type: ignore[return-value]
            (sizes[a] + 2 * self.padding[a] - self.dilation[a] * (self.kernel[a] - 1) - 1) // self.stride[a] + 1
            for a in (0, 1)
        )


def sources() -> list[Path]:
    if not KERNELS.is_dir():
        raise TargetError(f"kernel sources not found at {KERNELS}; install AutoCompress from its source tree")
    return sorted(p for p in KERNELS.rglob("*") if p.suffix in {".cc", ".h"})


def source_digest(*extra: str | Path) -> str:
    """A short hash of the kernel sources plus ``extra`` (strings as given, paths by name and content): the
    cache key of every kernel build."""
    h = hashlib.sha256()
    for item in [*sources(), *extra]:
        h.update(item.name.encode() + item.read_bytes() if isinstance(item, Path) else item.encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("AC_CACHE_DIR", Path.home() / ".cache" / "autocompress"))


def build(kind: str = "host") -> Path:
    """Configure and build with CMake (once per source hash); returns the build folder."""
    if kind not in TOOLCHAINS:
        raise TargetError(f"unknown kernel build {kind!r}; choose one of {', '.join(TOOLCHAINS)}")
    for tool in ("cmake", *(["aarch64-linux-gnu-g++"] if kind == "aarch64" else ["g++"])):
        if shutil.which(tool) is None:
            raise TargetError(f"building the kernels needs {tool}, not found; {INSTALL_HINT}")
    toolchain = TOOLCHAINS[kind]
    out = cache_dir() / "kernels" / f"{kind}-{source_digest(kind, ROOT / 'CMakeLists.txt', *filter(None, [toolchain]))}"
    if (out / ".complete").exists():
        return out
    configure = ["cmake", "-S", str(ROOT), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"]
    configure += [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}"] if toolchain else []
    for cmd in (configure, ["cmake", "--build", str(out), "--parallel"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise TargetError(f"kernel build failed ({' '.join(cmd)}):\n{(done.stdout + done.stderr)[-3000:]}")
    (out / ".complete").write_text("ok\n")
    return out


def load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build("host") / "libac_kernels.so"))
    lib.ac_compact_conv2d.restype = ctypes.c_int
    lib.ac_conv_error.restype = ctypes.c_char_p
    return lib


_LIB: ctypes.CDLL | None = None


def _ptr(a: np.ndarray | None) -> ctypes.c_void_p | None:
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def conv_shape(x: np.ndarray, f: int, k: int, geo: Geometry, relu: bool) -> ConvShape:
    oh, ow = geo.out_size(x.shape[2], x.shape[3])
    return ConvShape(*x.shape, f, k, *geo.kernel, *geo.stride, *geo.padding, *geo.dilation, oh, ow, int(relu))


def compact_conv2d(
    x: np.ndarray, weight: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, geo: Geometry,
    relu: bool = False, threads: int = 0, packed: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """``y = act(bias + weight @ im2col(x)[rows])``; see kernels/include/ac/compact_conv.h for the layout.
    ``packed`` (``pack_weights(weight)``) saves the packing when a layer runs many times."""
    global _LIB
    _LIB = _LIB or load()
    x = np.ascontiguousarray(x, np.float32)
    packed = pack_weights(np.asarray(weight, np.float32)) if packed is None else packed
    rows = np.ascontiguousarray(rows, np.int64)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    shape = conv_shape(x, weight.shape[0], len(rows), geo, relu)
    y = np.empty((shape.n, shape.f, shape.oh, shape.ow), np.float32)
    err = _LIB.ac_compact_conv2d(ctypes.byref(shape), _ptr(x), _ptr(packed), _ptr(rows), _ptr(bias), _ptr(y),
                                 threads)  # fmt: skip
    if err:
        raise ValueError(f"ac_compact_conv2d: {_LIB.ac_conv_error(err).decode()}")
    return y
