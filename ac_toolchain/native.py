"""Build and call the C++ kernels of ``kernels/`` (CMake), for the host or cross-compiled for aarch64; build the
device runner's core (android_bench/runner) and link a model into it.

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
from android_bench import qemu
from android_bench.lock import cache_dir

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
RUNNER = ROOT / "android_bench" / "runner"
NATIVE_DIRS = (KERNELS, RUNNER, ROOT / "android_bench" / "qemu_plugin")


@dataclass(frozen=True)
class NativeBuild:
    """One flavour of the CMake build: its compiler and what it adds to the CMake configure line."""

    compiler: str
    cmake: tuple[str, ...] = ()


BUILDS = {
    "host": NativeBuild("g++"),
    "aarch64": NativeBuild("aarch64-linux-gnu-g++", (f"-DCMAKE_TOOLCHAIN_FILE={ROOT}/cmake/aarch64-linux-gnu.cmake",)),
    # baseline x86-64 (no -march=native): the kernel's gather-GEMM paths, which AVX2 builds no longer take, for tests
    "portable": NativeBuild("g++", ("-DAC_NATIVE_ARCH=OFF",)),
}  # fmt: skip
# AVX2 without VNNI (-march=haswell): the int8 kernel's vpmaddwd path on hosts whose -march=native picks VNNI
BUILDS["avx2"] = NativeBuild("g++", ("-DAC_KERNEL_MARCH=haswell",))
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


def sources(dirs: tuple[Path, ...] | None = None) -> list[Path]:
    if not KERNELS.is_dir():
        raise TargetError(f"kernel sources not found at {KERNELS}; install AutoCompress from its source tree")
    return sorted(p for d in dirs or NATIVE_DIRS for p in d.rglob("*") if p.suffix in {".cc", ".h", ".cmake"})


def source_digest(*extra: str | Path, dirs: tuple[Path, ...] | None = None) -> str:
    """A short hash of the native sources in ``dirs`` (default: all of them) plus ``extra`` (strings as given,
    paths by name and content): the cache key of every native build."""
    h = hashlib.sha256()
    for item in [*sources(dirs), *extra]:
        h.update(item.name.encode() + item.read_bytes() if isinstance(item, Path) else item.encode())
    return h.hexdigest()[:16]


def _wheel_dirs() -> list[str]:
    """Where the installed apache-tvm and apache-tvm-ffi keep the runtime sources the runner is built from."""
    import tvm
    import tvm_ffi

    return [str(Path(tvm.__file__).parent), str(Path(tvm_ffi.__file__).parent)]


def build_dir(kind: str, runner: bool) -> Path:
    """The cache folder of one native build, named by the hash of what goes into it: the runner's core holds no
    kernel, so a kernel change leaves it cached (a rebuild is minutes)."""
    wheels = _wheel_dirs() if runner else []
    toolchains = sorted((ROOT / "cmake").glob("*.cmake"))
    extra: list[str | Path] = [
        kind,
        *BUILDS[kind].cmake,
        *wheels,
        *_versions(runner),
        ROOT / "CMakeLists.txt",
        *toolchains,
    ]
    digest = source_digest(*extra, dirs=(RUNNER,) if runner else None)
    return cache_dir() / "kernels" / f"{kind}{'-runner' if runner else ''}-{digest}"


def build(kind: str = "host", runner: bool = False) -> Path:
    """Configure and build with CMake (once per source hash); returns the build folder.

    ``runner``: build only ``libac_runner.a``, the device runner's core (TVM runtime from the installed wheel,
    a few minutes on two cores) instead of the kernel library.
    """
    if kind not in BUILDS:
        raise TargetError(f"unknown kernel build {kind!r}; choose one of {', '.join(BUILDS)}")
    flavour = BUILDS[kind]
    for tool in ("cmake", flavour.compiler):
        if shutil.which(tool) is None:
            raise TargetError(f"building the kernels needs {tool}, not found; {INSTALL_HINT}")
    out = build_dir(kind, runner)
    if (out / ".complete").exists():
        return out
    configure = ["cmake", "-S", str(ROOT), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *flavour.cmake]
    if runner:
        tvm_dir, ffi_dir = _wheel_dirs()
        configure += ["-DAC_RUNNER=ON", f"-DAC_TVM_DIR={tvm_dir}", f"-DAC_TVM_FFI_DIR={ffi_dir}"]
    compile_ = ["cmake", "--build", str(out), "--parallel", str(os.cpu_count() or 1)]
    compile_ += ["--target", "ac_runner"] if runner else []
    for cmd in (configure, compile_):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise TargetError(f"native build failed ({' '.join(cmd)}):\n{(done.stdout + done.stderr)[-3000:]}")
    (out / ".complete").write_text("ok\n")
    return out


def _versions(runner: bool) -> list[str]:
    from importlib.metadata import version

    return [version("apache-tvm"), version("apache-tvm-ffi")] if runner else []


def link_runner(objects: list[Path], kind: str, out: Path) -> Path:
    """Link a model's system-library objects with the runner's core into one static executable ``out``.

    Whole-archive: the runtime registers its functions from static initialisers that nothing references.
    """
    core = build(kind, runner=True) / "libac_runner.a"
    cmd = [BUILDS[kind].compiler, "-o", str(out), *map(str, objects), "-Wl,--whole-archive", str(core),
           "-Wl,--no-whole-archive", "-static", "-pthread", "-s"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise TargetError(f"linking the runner failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
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
    relu: bool = False, threads: int = 0, packed: np.ndarray | None = None, residual: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """``y = act(bias + weight @ im2col(x)[rows] + residual)``; see kernels/include/ac/compact_conv.h for the
    layout. ``packed`` (``pack_weights(weight)``) saves the packing when a layer runs many times; ``residual``
    (the output's shape) is optional."""
    global _LIB
    _LIB = _LIB or load()
    x = np.ascontiguousarray(x, np.float32)
    packed = pack_weights(np.asarray(weight, np.float32)) if packed is None else packed
    rows = np.ascontiguousarray(rows, np.int64)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    shape = conv_shape(x, weight.shape[0], len(rows), geo, relu)
    y = np.empty((shape.n, shape.f, shape.oh, shape.ow), np.float32)
    if residual is not None:
        residual = np.ascontiguousarray(residual, np.float32)
        if residual.shape != y.shape:
            raise ValueError(f"ac_compact_conv2d: residual shape {residual.shape} is not the output's {y.shape}")
    err = _LIB.ac_compact_conv2d(ctypes.byref(shape), _ptr(x), _ptr(packed), _ptr(rows), _ptr(bias),
                                 _ptr(residual), _ptr(y), threads)  # fmt: skip
    if err:
        raise ValueError(f"ac_compact_conv2d: {_LIB.ac_conv_error(err).decode()}")
    return y


qemu.use_plugin(lambda: build("host") / "libac_qemu_insn.so")  # the qemu-arm64 device counts with it


# ---- the int8 kernel (kernels/include/ac/compact_conv_int8.h) ----


class Int8Quant(ctypes.Structure):
    """Mirror of ``ac_conv_int8_quant`` in kernels/include/ac/compact_conv_int8.h."""

    _fields_ = [
        ("multiplier", ctypes.c_void_p),
        ("res_multiplier", ctypes.c_float),
        ("x_zero", ctypes.c_int32),
        ("y_zero", ctypes.c_int32),
        ("res_zero", ctypes.c_int32),
    ]


INT8_KINDS = ("host", "portable", "avx2")  # the x86 builds this process can load (aarch64: ac_conv_int8_file)
_INT8_LIBS: dict[str, ctypes.CDLL] = {}


def load_int8(kind: str = "host") -> ctypes.CDLL:
    """The kernel library of build ``kind`` (its int8 functions typed); each kind is a separate library."""
    if kind not in INT8_KINDS:
        kinds = ", ".join(INT8_KINDS)
        raise TargetError(f"the int8 kernel of build {kind!r} cannot run in this process; choose one of {kinds} "
                          "(the aarch64 build runs as ac_conv_int8_file under qemu)")  # fmt: skip
    if kind not in _INT8_LIBS:
        lib = ctypes.CDLL(str(build(kind) / "libac_kernels.so"))
        lib.ac_compact_conv2d_int8.restype = ctypes.c_int
        lib.ac_conv_int8_error.restype = ctypes.c_char_p
        lib.ac_conv_int8_path.restype = ctypes.c_char_p
        lib.ac_conv_int8_packed_size.restype = ctypes.c_size_t
        lib.ac_conv_int8_packed_size.argtypes = [ctypes.c_int, ctypes.c_int]
        _INT8_LIBS[kind] = lib
    return _INT8_LIBS[kind]


def int8_path(kind: str = "host") -> str:
    """The multiply path build ``kind`` runs: avx512-vnni, avx-vnni, avx2, neon-sdot, neon or scalar."""
    return str(load_int8(kind).ac_conv_int8_path().decode())


def requant_multipliers(x_scale: float, w_scale: np.ndarray, y_scale: float) -> np.ndarray:
    """The kernel's per-channel multipliers m[f] = s_x * s_w[f] / s_y: computed in float64, rounded to float32."""
    return (np.float64(x_scale) * np.asarray(w_scale, np.float64) / np.float64(y_scale)).astype(np.float32)


def _int8_array(name: str, a: np.ndarray, dtype: type, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
        got = f"{a.dtype} with {a.ndim} dimensions" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"ac_compact_conv2d_int8: {name} must be a {np.dtype(dtype)} array with {ndim} dimensions, "
                         f"got {got}")  # fmt: skip
    return np.ascontiguousarray(a)


def pack_weights_int8(weight: np.ndarray, kind: str = "host") -> np.ndarray:
    """The packed bytes ``ac_compact_conv2d_int8`` of build ``kind`` reads (weights plus column sums; the layout
    depends on the build: AVX2 without VNNI widens them to int16)."""
    lib = load_int8(kind)
    weight = _int8_array("weight", weight, np.int8, 2)
    f, k = weight.shape
    packed = np.empty(lib.ac_conv_int8_packed_size(f, k), np.uint8)
    lib.ac_conv_int8_pack_weights(f, k, _ptr(weight), _ptr(packed))
    return packed


def compact_conv2d_int8(
    x: np.ndarray, weight: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, geo: Geometry,
    multiplier: np.ndarray, x_zero: int, y_zero: int, relu: bool = False, residual: np.ndarray | None = None,
    res_multiplier: float = 0.0, res_zero: int = 0, threads: int = 0, packed: np.ndarray | None = None,
    kind: str = "host",
) -> np.ndarray:  # fmt: skip
    """The int8 compact conv: x int8 [N, C, H, W], weight int8 [F, K] (its columns the kept ``rows``), bias int32
    [F] or None, ``multiplier`` float32 [F] (``requant_multipliers``), zero points; ``residual`` int8 of the
    output's shape with ``res_multiplier`` (s_r / s_y, rounded to float32) and ``res_zero``. Returns int8
    [N, F, OH, OW]; the exact formula is in kernels/include/ac/compact_conv_int8.h. Wrong dtypes or shapes raise
    ValueError (nothing is converted silently). ``packed``: ``pack_weights_int8(weight, kind)``."""
    lib = load_int8(kind)
    x = _int8_array("x", x, np.int8, 4)
    weight = _int8_array("weight", weight, np.int8, 2)
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"ac_compact_conv2d_int8: rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
    rows = np.ascontiguousarray(rows, np.int64)
    f, k = weight.shape
    if k != len(rows):
        raise ValueError(f"ac_compact_conv2d_int8: weight has {k} columns for {len(rows)} kept rows")
    multiplier = _int8_array("multiplier", multiplier, np.float32, 1)
    if multiplier.shape != (f,):
        raise ValueError(f"ac_compact_conv2d_int8: multiplier shape {multiplier.shape}, expected ({f},)")
    if bias is not None:
        bias = _int8_array("bias", bias, np.int32, 1)
        if bias.shape != (f,):
            raise ValueError(f"ac_compact_conv2d_int8: bias shape {bias.shape}, expected ({f},)")
    shape = conv_shape(x, f, k, geo, relu)
    y = np.empty((shape.n, shape.f, shape.oh, shape.ow), np.int8)
    if residual is not None:
        residual = _int8_array("residual", residual, np.int8, 4)
        if residual.shape != y.shape:
            raise ValueError(f"ac_compact_conv2d_int8: residual shape {residual.shape} is not the output's {y.shape}")
    if packed is None:
        packed = pack_weights_int8(weight, kind)
    elif packed.dtype != np.uint8 or packed.shape != (lib.ac_conv_int8_packed_size(f, k),):
        raise ValueError(f"ac_compact_conv2d_int8: packed weights must come from pack_weights_int8(weight, {kind!r})")
    quant = Int8Quant(_ptr(multiplier), res_multiplier, x_zero, y_zero, res_zero)
    err = lib.ac_compact_conv2d_int8(ctypes.byref(shape), ctypes.byref(quant), _ptr(x), _ptr(packed), _ptr(rows),
                                     _ptr(bias), _ptr(residual), _ptr(y), threads)  # fmt: skip
    if err:
        raise ValueError(f"ac_compact_conv2d_int8: {lib.ac_conv_int8_error(err).decode()}")
    return y
