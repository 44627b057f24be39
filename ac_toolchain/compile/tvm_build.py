"""Lower an ONNX model with TVM (relax frontend) and write ``<run>/<target>/``: the compiled module and a
manifest with hashes, versions, target and I/O.

CPU targets route their convolutions to the C++ kernel of kernels/ (compile/lowering.py; the convs of an int8
QDQ model to the int8 kernel), linked into model.so; the remaining ops (pools, residual adds, linear layers, the
gathers of column-pruned convs) use TVM's default relax pipeline, unscheduled, unless ``--tune-trials`` tunes them
(compile/tuning.py, x86).
GPU targets get dlight's generic GPU rules, which is what makes them compile at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ac_toolchain import native
from ac_toolchain.compile.lowering import (
    FP32_SOURCES,
    INT8_SOURCES,
    int8_path,
    kernel_objects,
    route_convolutions,
    route_int8_convolutions,
)
from ac_toolchain.compile.targets import Target
from ac_toolchain.compile.tuning import TUNING_DIR, check_tunable, has_records, tune, tuning_target
from ac_toolchain.errors import TargetError

TVM_ONNX = "model.tvm.onnx"  # a run's compact model with column-pruned convs as zero columns (expand_columns)
INSTALL_HINT = "install it with: bash scripts/install-system-deps.sh (Debian: apt-get install g++-aarch64-linux-gnu)"


def check_toolchain(target: Target) -> None:
    """A missing cross compiler is an error that says which command installs it."""
    if target.cross_compiler and shutil.which(target.cross_compiler) is None:
        raise TargetError(
            f"target {target.name} needs the cross compiler {target.cross_compiler}, not found; {INSTALL_HINT}"
        )


@contextlib.contextmanager
def quiet_native_stderr() -> Any:
    """Silence what TVM's C++ prints to fd 2 (a warning per gather); replay it if the build fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tvm_target(target: Target) -> Any:
    import tvm

    if target.link == "source":  # a GPU: the host code runs on the phone's aarch64 CPU
        return tvm.target.Target(target.tvm_target, host={"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    return tvm.target.Target(target.tvm_target)


def _gpu_schedules(mod: Any, tvm_target: Any) -> Any:
    """Legalise, fuse and give every kernel a thread binding with dlight's generic GPU rules."""
    import tvm
    import tvm.s_tir.dlight as dl
    from tvm import relax

    passes = [
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
        relax.transform.FuseOps(), relax.transform.FuseTIR(),
        dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                dl.gpu.Fallback()),
    ]  # fmt: skip
    with tvm_target:
        return tvm.ir.transform.Sequential(passes)(mod)


def _find_module(mod: Any, kind: str) -> Any:
    if mod.kind == kind:
        return mod
    for imported in mod.imports:
        found = _find_module(imported, kind)
        if found is not None:
            return found
    return None


def _export_shared(ex: Any, target: Target, out_dir: Path, addons: list[Path]) -> list[Path]:
    """A shared library for the target's loader (glibc), with the kernel objects linked in."""
    from tvm.support import cc

    lib = out_dir / "model.so"
    options: dict[str, Any] = {"addons": [str(a) for a in addons]} if addons else {}
    if target.cross_compiler:
        options["fcompile"] = cc.cross_compiler(target.cross_compiler)
    ex.export_library(str(lib), **options)
    return [lib]


def _export_source(ex: Any, target: Target, out_dir: Path, addons: list[Path]) -> list[Path]:
    """The host part as a shared library, plus the generated GPU kernel source."""
    files = _export_shared(ex, target, out_dir, addons)
    kernels = _find_module(ex.mod, target.tvm_target["kind"])
    if kernels is None:
        raise TargetError(f"TVM produced no {target.tvm_target['kind']} module for {target.name}")
    source = out_dir / "kernels.cl"
    source.write_text(kernels.inspect_source())
    return [*files, source]


def _export_static(ex: Any, target: Target, out_dir: Path, addons: list[Path]) -> list[Path]:
    """The model as a system library (objects), linked with the kernel objects into the static device runner: one
    executable that runs under any loader (Android's, qemu-user, this machine's)."""
    import tarfile

    from tvm.support import tar

    with tempfile.TemporaryDirectory() as tmp:
        ex.export_library(f"{tmp}/model.tar", fcompile=tar.tar)
        with tarfile.open(f"{tmp}/model.tar") as archive:
            archive.extractall(tmp, filter="data")
        objects = [*sorted(Path(tmp).glob("*.o")), *_c_source_objects(Path(tmp), target), *addons]
        return [native.link_runner(objects, target.native, out_dir / "runner")]


# A model whose every op runs on the kernel (one conv with its bias and ReLU: a --profile-layers layer) has no
# TVM-generated function, and TVM then exports its library as C source whose executable blob nothing registers
# in the system library (LLVM's objects do it from a static initialiser): this does it instead.
_REGISTER_LIBRARY_BIN = """
int TVMFFIEnvModRegisterSystemLibSymbol(const char* name, void* symbol);
extern const unsigned char __tvm_ffi__library_bin[];
__attribute__((constructor)) static void ac_register_library_bin(void) {
  TVMFFIEnvModRegisterSystemLibSymbol("__tvm_ffi__library_bin", (void*)__tvm_ffi__library_bin);
}
"""


def _c_source_objects(tmp: Path, target: Target) -> list[Path]:
    sources = sorted(tmp.glob("*.c"))
    if any("__tvm_ffi__library_bin[" in f.read_text() for f in sources):
        (tmp / "ac_register_library_bin.c").write_text(_REGISTER_LIBRARY_BIN)
        sources.append(tmp / "ac_register_library_bin.c")
    objects = []
    for src in sources:
        cmd = [target.cross_compiler or "g++", "-x", "c", "-O2", "-c", str(src), "-o", str(src.with_suffix(".o"))]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise TargetError(f"compiling TVM's {src.name} for {target.name} failed:\n{done.stderr[-3000:]}")
        objects.append(src.with_suffix(".o"))
    return objects


EXPORTERS: dict[str, Callable[[Any, Target, Path, list[Path]], list[Path]]] = {
    "shared": _export_shared, "source": _export_source, "static": _export_static,
}  # fmt: skip


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _io(model: onnx.ModelProto) -> dict[str, Any]:
    def describe(values: Any) -> list[dict[str, Any]]:
        return [
            {"name": v.name, "shape": [d.dim_value for d in v.type.tensor_type.shape.dim],
             "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}
            for v in values
        ]  # fmt: skip

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def _batch_of_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a symbolic batch dimension (the QDQ models of int8/ have one) fixed to 1: the static runner
    feeds one image, and its inputs and outputs need static shapes. A model without one is returned as it is."""
    values = [*model.graph.input, *model.graph.output]
    dims = [v.type.tensor_type.shape.dim[0] for v in values if v.type.tensor_type.shape.dim]
    if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for v in [*fixed.graph.input, *fixed.graph.output]:
        if v.type.tensor_type.shape.dim and not v.type.tensor_type.shape.dim[0].dim_value > 0:
            v.type.tensor_type.shape.dim[0].dim_value = 1
    del fixed.graph.value_info[:]  # intermediate shapes with the symbolic batch: the importer infers them again
    return fixed


def compile_onnx(onnx_path: Path, target: Target, out_dir: Path, tune_trials: int = 0) -> dict[str, Any]:
    """Import, build and export; returns (and writes) the manifest. ``tune_trials`` MetaSchedule candidates tune
    what TVM compiles itself (x86 only); tuning records already in ``out_dir/tuning`` are applied either way."""
    check_toolchain(target)
    check_tunable(target, tune_trials)
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    if target.link == "static":
        model = _batch_of_one(model)
    work_dir = out_dir / TUNING_DIR
    tuned = bool(tune_trials) or has_records(work_dir)
    tvm_target = tuning_target(target) if tuned else _tvm_target(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_native_stderr():
        mod = from_onnx(model, keep_params_in_input=False)
        routed: list[tuple[int, int, bool]] = []
        routed_int8: list[tuple[int, int, bool]] = []
        if target.kernel_flags is not None:
            mod, routed_int8 = route_int8_convolutions(mod)  # QDQ convs first: what they decline goes to fp32
            mod, routed = route_convolutions(mod)
        sources = (FP32_SOURCES if routed else ()) + (INT8_SOURCES if routed_int8 else ())
        addons = kernel_objects(target, sources) if sources else []
        if target.link == "source":
            mod = _gpu_schedules(mod, tvm_target)
        tuning_seconds = 0.0
        if tuned:
            tuning_seconds = -time.perf_counter()
            mod = tune(mod, tvm_target, tune_trials, work_dir)
            tuning_seconds += time.perf_counter()
        ex = tvm.relax.build(mod, target=tvm_target, system_lib=target.link == "static")
        files = EXPORTERS[target.link](ex, target, out_dir, addons)
    manifest = {
        "target": target.name, "tvm_target": str(tvm_target), "tvm_version": tvm.__version__, "link": target.link,
        "source_onnx": str(onnx_path), "source_sha256": sha256(onnx_path), **_io(model),
        "files": {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size} for f in files},
        "schedules": _schedules(target, routed, tuned, len(routed_int8)),
        "tuning": {"trials": tune_trials, "dir": str(work_dir), "seconds": round(tuning_seconds, 3)}
        if tuned else None,
        "kernel_convolutions": len(routed),
        "kernel_rows": {"kept": sum(r[0] for r in routed), "total": sum(r[1] for r in routed)},
        "kernel_fused_residuals": sum(r[2] for r in routed),
        "kernel_int8_convolutions": len(routed_int8),
        "kernel_int8_rows": {"kept": sum(r[0] for r in routed_int8), "total": sum(r[1] for r in routed_int8)},
        "kernel_int8_fused_residuals": sum(r[2] for r in routed_int8),
        "kernel_int8_path": int8_path(target) if routed_int8 else None,
        "build_seconds": round(time.perf_counter() - start, 3),
        "command": " ".join(sys.argv),
    }  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _schedules(target: Target, routed: list[tuple[int, int, bool]], tuned: bool, int8: int = 0) -> str:
    if target.link == "source":
        return "dlight generic GPU rules"
    rest = "MetaSchedule-tuned (tuning/)" if tuned else "default relax pipeline"
    if int8:  # an int8 QDQ model: said apart, and an fp32 build's line stays as it was
        return (
            f"{int8} int8 convolutions on the kernels/ int8 compact-conv kernel, {len(routed)} on the fp32 one; "
            f"other ops: {rest}"
        )
    return f"{len(routed)} convolutions on the kernels/ compact-conv kernel; other ops: {rest}"


Runner = Callable[[np.ndarray], np.ndarray]


def load_host_module(out_dir: Path) -> Runner:
    """Load an x86 artifact of this machine and return ``x -> logits`` (equivalence checks, benchmarks).

    Arrays cross by DLPack, without copies through TVM's Python wrappers: ``tvm.runtime.tensor(x)`` and
    ``.numpy()`` cost 0.3 ms per call of a ResNet-18 (8.40 -> 8.12 ms, one thread), 3 % of the model.
    """
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(out_dir / "model.so"))
    main = relax.VirtualMachine(lib, tvm.cpu())["main"]

    def run(x: np.ndarray) -> np.ndarray:
        out = main(tvm.runtime.from_dlpack(_aligned(x)))
        return np.from_dlpack(out if hasattr(out, "__dlpack__") else out[0]).copy()

    return run


def _aligned(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``x`` on a 64-byte boundary, which TVM asks of tensors it borrows by DLPack."""
    raw = np.empty(x.nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    np.copyto(out, x)
    return out
