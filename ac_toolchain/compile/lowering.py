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

int8 QDQ models (``<run>/int8/model.int8.onnx``, docs/quantize.md) go to the int8 kernel (``route_int8_convolutions``,
run before the fp32 routing). TVM 0.27's ONNX frontend imports ``QuantizeLinear`` / ``DequantizeLinear`` as
``relax.quantize`` / ``relax.dequantize`` (int8 tensors between them, fp32 after a dequantize) and every other op
as its fp32 op, so a quantized conv arrives as
``quantize(conv2d(dequantize(x_q), dequantize(w_q)) [+ reshape(dequantize(b_q))], s1, z1)``, followed by what
onnxruntime's quantizer put after it: ``dequantize -> relu -> quantize(s2, z2)``, or ``dequantize -> add(.,
dequantize(r_q)) [-> relu] -> quantize(s2, z2)`` (a ResNet block's shortcut), or ``dequantize -> relu -> max_pool``.
Each chain becomes one ``R.call_dps_packed("ac_compact_conv2d_int8", x_q, weight, rows, bias, multipliers,
geometry)`` (``..._add`` with the shortcut's int8 tensor) that reads the int8 input and writes the int8 output:
the convolution runs int8 x int8 -> int32 over the kept rows, and the bias, the shortcut, the ReLU and the
requantization to the chain's last scale are fused into it. What runs how:

- int8, in the kernel: every conv whose input and output are int8 per-tensor activations and whose weights are
  int8 symmetric per output channel (onnxruntime's QDQ defaults), with its bias, shortcut add and ReLU;
- int8, in TVM: the ``quantize`` of the model input (and of whatever else feeds a conv: a pool's output);
- fp32, in TVM: pools, a shortcut add whose result is not quantized (ResNet's last block: Add -> Relu -> ReduceMean;
  the sum of two dequantized tensors is on neither grid, so the kernel cannot return it), Reshape / Gather /
  ReduceMean, the linear layers (``Gemm``: the kernel is a conv kernel; TVM computes them on the dequantized int8
  weights) and the ``dequantize`` after each int8 tensor that an fp32 op reads. These ops are a small part of a
  CNN's work, and in fp32 they compute what onnxruntime's QDQ semantics define.
- Convs the kernel cannot take (uint8 activations, grouped, asymmetric weights) keep their QDQ ops and are routed
  by the fp32 rules above (the weights' ``dequantize`` is folded into an fp32 constant).

Where the QDQ graph rounds twice, the kernel rounds once: ``Conv -> Q(s1) -> DQ -> Relu -> Q(s2)`` (and the same
with the shortcut add) quantizes the conv's output to the grid s1 and then to s2; the kernel requantizes the exact
int32 sum straight to s2. That drops one rounding (its result is within half a step of the exact value, which the
doubly rounded one need not be) and one pass over the tensor; it is not bit-equal to onnxruntime, whose outputs it
meets within an output step or two (tests/compile/test_int8_lowering.py). A ReLU with no quantize after it (``Relu
-> MaxPool``) is fused exactly: ``relu(dequantize(q)) = dequantize(max(q, z))``, so the kernel clamps at the zero
point and TVM dequantizes.

The kernel's packed weights are specific to the build that runs them (its AVX2 path widens them to int16), and a
cross build cannot run the target's packer: the int8 weights go into the module plain ([F, K] int8, K the kept
rows), and the TVM entry (kernels/src/tvm_entry_int8.cc) packs them with the target's own packer on first use.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ac_toolchain import native
from ac_toolchain.compile.targets import Target
from ac_toolchain.errors import TargetError

PACKED_FUNC = "ac_compact_conv2d"
PACKED_FUNC_ADD = "ac_compact_conv2d_add"  # the same with a residual added before the ReLU
PACKED_FUNC_INT8 = "ac_compact_conv2d_int8"
PACKED_FUNC_INT8_ADD = "ac_compact_conv2d_int8_add"  # the same with an int8 residual added before the ReLU
FP32_SOURCES = ("compact_conv.cc", "tvm_entry.cc")
INT8_SOURCES = ("compact_conv_int8.cc", "tvm_entry_int8.cc")  # compiled with the target's int8_flags added
SOURCES = FP32_SOURCES + INT8_SOURCES
INT8_MAX_K = 65536  # AC_CONV_INT8_MAX_K: the most kept rows the int8 kernel sums without overflow


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


def _scalar(expr: Any) -> float | None:
    value = _const(expr)
    return None if value is None or value.size != 1 else float(value.reshape(()))


def _alike(a: Any, b: Any) -> bool:
    """Whether two tensors have the same shape, symbolic dimensions (a dynamic batch) included."""
    import tvm_ffi

    try:
        return bool(tvm_ffi.structural_equal(a.ty.shape, b.ty.shape))
    except AttributeError:
        return False


def _int8(expr: Any) -> bool:
    try:
        return str(expr.ty.dtype) == "int8"
    except AttributeError:
        return False


def _activation(dq: Any) -> tuple[float, int] | None:
    """(scale, zero point) of ``dequantize(q, scale, zero point)`` of an int8 per-tensor activation."""
    scale, zero = _scalar(dq.args[1]), _scalar(dq.args[2])
    if scale is None or zero is None or not scale > 0 or not _int8(dq.args[0]):
        return None
    return scale, int(zero)


def _output(q: Any) -> tuple[float, int] | None:
    """(scale, zero point) of ``quantize(y, scale, zero point)`` to an int8 per-tensor activation."""
    scale, zero = _scalar(q.args[1]), _scalar(q.args[2])
    if scale is None or zero is None or not scale > 0 or str(q.attrs.out_dtype) != "int8":
        return None
    return scale, int(zero)


def _to_int8_kernel(m: dict[str, Any], out: tuple[float, int], relu: bool, stats: list[tuple[int, int, bool]],
                    residual: Any = None) -> Any:  # fmt: skip
    """The call_dps_packed that computes a QDQ conv chain in int8 (``m``: the matched conv, its input's and weights'
    dequantize, the bias' dequantize or None), requantized to ``out`` = (scale, zero point); None when the kernel
    cannot take it. ``residual``: the shortcut's dequantize call (its int8 tensor is passed)."""
    from tvm import relax

    conv, xdq, wdq, bdq = m["conv"], m["x"], m["w"], m["b"]
    x, w, w_scale, w_zero = _activation(xdq), _const(wdq.args[0]), _const(wdq.args[1]), _const(wdq.args[2])
    if x is None or w is None or w_scale is None or w_zero is None or w.dtype != np.int8 or w.ndim != 4:
        return None
    f, c, kh, kw = w.shape
    if np.any(w_zero != 0) or w_scale.size not in (1, f) or (w_scale.size == f and int(wdq.attrs.axis) != 0):
        return None  # the kernel's weights are symmetric, one scale per output channel (or one for all)
    geometry = _geometry(conv.attrs, kh, kw, relu)
    if geometry is None or not _alike(conv, m["root"]):
        return None
    (x_scale, x_zero), (y_scale, y_zero) = x, out
    w_scale = np.broadcast_to(w_scale.reshape(-1).astype(np.float64), (f,))
    bias = np.zeros(f, np.int32)
    if bdq is not None:  # int32 in the accumulator's units s_x * s_w[f] (onnxruntime's bias scale: unchanged)
        b, b_scale, b_zero = _const(bdq.args[0]), _const(bdq.args[1]), _const(bdq.args[2])
        if b is None or b_scale is None or b_zero is None or b.size != f or np.any(b_zero != 0):
            return None
        exact = b.reshape(f).astype(np.float64) * b_scale.reshape(-1).astype(np.float64) / (x_scale * w_scale)
        if np.abs(exact).max(initial=0) >= 2**30:
            return None
        bias = np.round(exact).astype(np.int32)
    res_scale, res_zero = 0.0, 0
    if residual is not None:
        r = _activation(residual)
        if r is None or not _alike(residual.args[0], m["root"]):
            return None
        res_scale, res_zero = r
    zeros = [x_zero, y_zero, res_zero]
    if any(not -128 <= z <= 127 for z in zeros):
        return None
    matrix = w.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)  # tap-major columns, r = (i*KW + j)*C + c
    rows = np.flatnonzero(np.any(matrix != 0, axis=0))  # pruned (all-zero) columns are skipped, not multiplied
    rows = rows if len(rows) else np.zeros(1, np.int64)  # an all-zero conv still needs one row: its output is bias
    if len(rows) > INT8_MAX_K:
        return None
    multiplier = np.append(native.requant_multipliers(x_scale, w_scale, y_scale),
                           np.float32(np.float64(res_scale) / np.float64(y_scale)))  # fmt: skip
    geometry = np.append(geometry, np.array(zeros, np.int64))
    args = [xdq.args[0], relax.const(np.ascontiguousarray(matrix[:, rows]), "int8"), relax.const(rows, "int64"),
            relax.const(bias, "int32"), relax.const(multiplier, "float32"), relax.const(geometry, "int64")]  # fmt: skip
    func = PACKED_FUNC_INT8
    if residual is not None:
        args.append(residual.args[0])
        func = PACKED_FUNC_INT8_ADD
    stats.append((len(rows), matrix.shape[1], residual is not None))
    return relax.call_dps_packed(func, args, out_ty=relax.TensorType(conv.ty.shape, "int8"))


def route_int8_convolutions(mod: Any) -> tuple[Any, list[tuple[int, int, bool]]]:
    """Rewrite the module's QDQ conv chains to the int8 kernel (module docstring); returns the module and, per
    rewrite, (kept rows, rows, whether a shortcut add was fused)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    def dequantize(arg: Any) -> Any:
        return is_op("relax.dequantize")(arg, is_const(), is_const())

    def quantize(arg: Any) -> Any:
        return is_op("relax.quantize")(arg, is_const(), is_const())

    x, w, b = dequantize(wildcard()), dequantize(is_const()), dequantize(is_const())
    conv = is_op("relax.nn.conv2d")(x, w)
    bias = is_op("relax.reshape")(b, wildcard())
    biased = is_op("relax.add")(conv, bias) | is_op("relax.add")(bias, conv)
    q1 = quantize(biased | conv)
    dq1 = dequantize(q1)
    shortcut = dequantize(wildcard())
    added = is_op("relax.add")(dq1, shortcut) | is_op("relax.add")(shortcut, dq1)
    relu, added_relu = is_op("relax.nn.relu")(dq1), is_op("relax.nn.relu")(added)
    stats: list[tuple[int, int, bool]] = []

    def rewriter(relu_fused: bool, exact_relu: bool = False, has_shortcut: bool = False) -> Any:
        def rewrite(expr: Any, matches: dict[Any, Any]) -> Any:
            m = {"conv": matches[conv], "x": matches[x], "w": matches[w], "b": matches.get(b), "root": expr}
            q = matches[q1] if exact_relu else expr  # the quantize whose scale the kernel's output has
            out = _output(q)
            if out is None:
                return expr
            new = _to_int8_kernel(m, out, relu_fused, stats, matches[shortcut] if has_shortcut else None)
            if new is None or not exact_relu:
                return expr if new is None else new
            # relu(dequantize(q1)) = dequantize(max(q1, z1)): the kernel clamps at z1, TVM dequantizes
            return relax.op.dequantize(new, q.args[1], q.args[2], axis=1, out_dtype="float32")

        return rewrite

    patterns = [  # the longest first: what a pattern declines, the shorter ones below still take
        (quantize(added_relu), rewriter(True, has_shortcut=True)),
        (quantize(added), rewriter(False, has_shortcut=True)),
        (quantize(relu), rewriter(True)),
        (relu, rewriter(True, exact_relu=True)),
        (q1, rewriter(False)),
    ]
    for name, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            for pattern, rewrite in patterns:
                func = rewrite_call(pattern, rewrite, func)
            mod[name] = func
    return mod, stats


def kernel_objects(target: Target, names: tuple[str, ...] = SOURCES) -> list[Path]:
    """Compile kernels/src's ``names`` for the target (cached by source hash and flags); the objects model.so (or
    the static runner) links."""
    import tvm
    import tvm_ffi.libinfo

    if target.kernel_flags is None:
        raise TargetError(f"target {target.name} does not run the CPU kernels")
    compiler = target.cross_compiler or "g++"
    includes = [str(native.KERNELS / "include"), tvm_ffi.libinfo.find_include_path(),
                tvm_ffi.libinfo.find_dlpack_include_path(), str(Path(tvm.__file__).parent / "include")]  # fmt: skip
    flags = ["-O3", "-std=c++17", "-fPIC", "-ffp-contract=fast", "-DAC_PARALLEL_TVM", *target.kernel_flags]
    flags += ["-DAC_SYSTEM_LIB"] if target.link == "static" else []  # the runner finds it in the system library
    digest = native.source_digest(compiler, *flags, *target.int8_flags)
    out = native.cache_dir() / "tvm-kernels" / f"{target.name}-{digest}"
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for name in names:
        obj = out / f"{name}.o"
        if not obj.exists():
            extra = target.int8_flags if name in INT8_SOURCES else ()
            cmd = [compiler, *flags, *extra, *(f"-I{i}" for i in includes), "-c", str(native.KERNELS / "src" / name)]
            done = subprocess.run([*cmd, "-o", str(obj.with_suffix(".tmp"))], capture_output=True, text=True)
            if done.returncode:
                raise TargetError(f"compiling the kernel {name} for {target.name} failed:\n{done.stderr[-3000:]}")
            obj.with_suffix(".tmp").rename(obj)
        objects.append(obj)
    return objects


# The int8 kernel's multiply path by the compiler's predefined macros (the order of compact_conv_int8.cc's #if).
_INT8_PATHS = (
    (("__aarch64__", "__ARM_FEATURE_DOTPROD"), "neon-sdot"), (("__aarch64__",), "neon"),
    (("__AVX512VNNI__", "__AVX512VL__"), "avx512-vnni"), (("__AVXVNNI__",), "avx-vnni"), (("__AVX2__",), "avx2"),
)  # fmt: skip


def int8_path(target: Target) -> str:
    """The multiply path the target's build of the int8 kernel compiles (its ``ac_conv_int8_path()``), read from
    the cross compiler's predefined macros, since a cross build cannot be asked at run time here."""
    if target.kernel_flags is None:
        raise TargetError(f"target {target.name} does not run the CPU kernels")
    return _int8_path(target.cross_compiler or "g++", (*target.kernel_flags, *target.int8_flags))


@functools.cache
def _int8_path(compiler: str, flags: tuple[str, ...]) -> str:
    cmd = [compiler, *flags, "-dM", "-E", "-x", "c++", "-"]
    done = subprocess.run(cmd, input="", capture_output=True, text=True)
    if done.returncode:
        raise TargetError(f"asking {cmd[0]} for the int8 kernel's path failed:\n{done.stderr[-3000:]}")
    macros = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("#define ")}
    return next((path for need, path in _INT8_PATHS if all(m in macros for m in need)), "scalar")
