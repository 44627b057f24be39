"""Route convolutions of a relax module to the C++ compact-conv kernel of ``kernels/``.

TVM 0.27's default CPU pipeline schedules nothing, so its convolutions are far slower than onnxruntime
(docs/cpu-builds.md). Every ``conv2d`` with constant weights, ``groups == 1`` and NCHW
layout, together with a
following per-channel bias ``add``, residual ``add`` (a ResNet block's shortcut: any tensor of the output's
shape) and ``relu`` when present, becomes
``R.call_dps_packed("ac_compact_conv2d", x, packed_weight, rows, bias, geometry)`` (``ac_compact_conv2d_add``
with the residual after the geometry); the kernel and its TVM-FFI entry (kernels/src/tvm_entry.cc) are compiled
for the target and linked into model.so. Depthwise and other grouped convolutions stay with TVM.

All-zero weight columns are pruned columns: the kernel gets only the non-zero ones as its kept rows, so a
column-pruned conv multiplies only its kept rows. That is why the compile stage imports the compact model
with its ``CompactConv2d`` layers written as plain convs with zero columns (``compact.expand_columns``,
``model.tvm.onnx``): TVM then sees ordinary convs, and the kernel does the gather. (``CompactConv2d``'s own
ONNX form, Pad / Slice / Gather / Concat / 1x1 Conv, also compiles, but its gathers then run as unscheduled TVM
code: that is the form for onnxruntime.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ac_toolchain import native
from ac_toolchain.compile.targets import Target
from ac_toolchain.errors import TargetError

PACKED_FUNC = "ac_compact_conv2d"
PACKED_FUNC_ADD = "ac_compact_conv2d_add"  # the same with a residual added before the ReLU
SOURCES = ("compact_conv.cc", "tvm_entry.cc")


def _const(expr: Any) -> np.ndarray | None:
    from tvm.ir.expr import Constant

    return expr.value.numpy() if isinstance(expr, Constant) else None


def _geometry(attrs: Any, kh: int, kw: int, relu: bool) -> np.ndarray | None:
    """(kh, kw, sh, sw, ph, pw, dh, dw, relu), or None when the conv is outside what the kernel does."""
    top, left, bottom, right = (int(p) for p in attrs.padding)
    plain = int(attrs.groups) == 1 and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"
    if not plain or (top, left) != (bottom, right) or str(attrs.out_dtype) not in ("None", "", "float32"):
        return None
    (sh, sw), (dh, dw) = (int(s) for s in attrs.strides), (int(d) for d in attrs.dilation)
    return np.array([kh, kw, sh, sw, top, left, dh, dw, int(relu)], np.int64)


def _bias(add: Any, channels: int) -> np.ndarray | None:
    """The bias of ``conv + bias``: its constant argument (the other is the conv's variable, not the conv call the
    pattern matched, so the two are told apart by constness)."""
    if add is None:
        return np.zeros(channels, np.float32)
    values = [v for v in map(_const, add.args) if v is not None]
    if len(values) != 1 or values[0].size != channels or values[0].shape not in ((channels,), (1, channels, 1, 1)):
        return None
    return values[0].reshape(channels).astype(np.float32)


def _static_shape(expr: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in expr.ty.shape.values)
    except (AttributeError, TypeError, ValueError):  # no shape, or a symbolic one
        return None


def _same_shape(a: Any, b: Any) -> bool:
    return _static_shape(a) is not None and _static_shape(a) == _static_shape(b)


def _to_kernel(conv: Any, add: Any, relu: bool, stats: list[tuple[int, int, bool]], residual: Any = None) -> Any:
    """The call_dps_packed that replaces conv (+ bias add) (+ residual add) (+ relu), or None when the kernel cannot
    take it."""
    from tvm import relax

    if residual is not None and not _same_shape(residual, conv):  # a broadcasting add is not a shortcut
        return None
    weight = _const(conv.args[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4:
        return None
    f, c, kh, kw = weight.shape
    geometry, bias = _geometry(conv.attrs, kh, kw, relu), _bias(add, f)
    if geometry is None or bias is None:
        return None
    matrix = weight.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)  # tap-major columns, r = (i*KW + j)*C + c
    rows = np.flatnonzero(np.any(matrix != 0, axis=0))  # pruned (all-zero) columns are skipped, not multiplied
    rows = rows if len(rows) else np.zeros(1, np.int64)  # an all-zero conv still needs one row: its output is bias
    args = [conv.args[0], relax.const(native.pack_weights(matrix[:, rows])), relax.const(rows, "int64"),
            relax.const(bias), relax.const(geometry, "int64")]  # fmt: skip
    stats.append((len(rows), matrix.shape[1], residual is not None))
    func = PACKED_FUNC if residual is None else PACKED_FUNC_ADD
    args += [] if residual is None else [residual]
    return relax.call_dps_packed(func, args, out_ty=relax.TensorType(conv.ty.shape, "float32"))


def _variable(call: Any, value: Any, var2val: dict[Any, Any]) -> Any:
    """The argument of ``call`` that holds ``value``: the pattern matched a variable's bound value, and passing that
    value on would compute it a second time."""
    for arg in call.args:
        if arg.same_as(value) or (arg in var2val and var2val[arg].same_as(value)):
            return arg
    return None


def route_convolutions(mod: Any) -> tuple[Any, list[tuple[int, int, bool]]]:
    """Rewrite the module's convolutions to the kernel; returns the module and, per rewrite, (kept rows, rows,
    whether a residual add was fused)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    add = is_op("relax.add")(conv, is_const()) | is_op("relax.add")(is_const(), conv)
    res = ~is_const()
    shortcut = is_op("relax.add")(add, res) | is_op("relax.add")(res, add)
    bare_shortcut = is_op("relax.add")(conv, res) | is_op("relax.add")(res, conv)  # a conv without bias
    stats: list[tuple[int, int, bool]] = []

    def rewriter(has_add: bool, has_relu: bool, shortcut_pattern: Any = None) -> Any:
        def make(var2val: dict[Any, Any]) -> Any:
            def rewrite(expr: Any, matches: dict[Any, Any]) -> Any:
                residual = None
                if shortcut_pattern is not None:
                    residual = _variable(matches[shortcut_pattern], matches[res], var2val)
                    if residual is None:
                        return expr
                new = _to_kernel(matches[conv], matches[add] if has_add else None, has_relu, stats, residual)
                return expr if new is None else new

            return rewrite

        return make

    patterns = [  # the longest first: what a pattern declines, the shorter ones below still take
        (is_op("relax.nn.relu")(shortcut), rewriter(True, True, shortcut)), (shortcut, rewriter(True, False, shortcut)),
        (is_op("relax.nn.relu")(bare_shortcut), rewriter(False, True, bare_shortcut)),
        (bare_shortcut, rewriter(False, False, bare_shortcut)),
        (is_op("relax.nn.relu")(add), rewriter(True, True)), (add, rewriter(True, False)),
        (is_op("relax.nn.relu")(conv), rewriter(False, True)), (conv, rewriter(False, False)),
    ]  # fmt: skip
    mod = relax.transform.FoldConstant()(mod)
    for name, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            for pattern, make in patterns:
                func = rewrite_call(pattern, make(relax.analysis.get_var2val(func)), func)
            mod[name] = func
    return mod, stats


def kernel_objects(target: Target) -> list[Path]:
    """Compile kernels/src for the target (cached by source hash and flags); the objects model.so (or the static
    runner) links."""
    import tvm
    import tvm_ffi.libinfo

    if target.kernel_flags is None:
        raise TargetError(f"target {target.name} does not run the CPU kernels")
    compiler = target.cross_compiler or "g++"
    includes = [str(native.KERNELS / "include"), tvm_ffi.libinfo.find_include_path(),
                tvm_ffi.libinfo.find_dlpack_include_path(), str(Path(tvm.__file__).parent / "include")]  # fmt: skip
    flags = ["-O3", "-std=c++17", "-fPIC", "-ffp-contract=fast", "-DAC_PARALLEL_TVM", *target.kernel_flags]
    flags += ["-DAC_SYSTEM_LIB"] if target.link == "static" else []  # the runner finds it in the system library
    out = native.cache_dir() / "tvm-kernels" / f"{target.name}-{native.source_digest(compiler, *flags)}"
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for name in SOURCES:
        obj = out / f"{name}.o"
        if not obj.exists():
            cmd = [compiler, *flags, *(f"-I{i}" for i in includes), "-c", str(native.KERNELS / "src" / name)]
            done = subprocess.run([*cmd, "-o", str(obj.with_suffix(".tmp"))], capture_output=True, text=True)
            if done.returncode:
                raise TargetError(f"compiling the kernel {name} for {target.name} failed:\n{done.stderr[-3000:]}")
            obj.with_suffix(".tmp").rename(obj)
        objects.append(obj)
    return objects
