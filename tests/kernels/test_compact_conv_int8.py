"""The int8 compact conv (kernels/src/compact_conv_int8.cc) bit-exact against a numpy int32 reference: random shapes
(hypothesis) on the host build (VNNI or AVX2), the AVX2 build (vpmaddwd) and the baseline x86-64 build (scalar);
register-tile edges; extreme values over a large K (no int16 saturation); the aarch64 sdot and plain-NEON builds
under qemu-aarch64; bad input refused; and within one quantization step of onnxruntime's QDQ conv."""

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ac_toolchain import native
from ac_toolchain.native import Geometry
from tests.kernels.strategies import geometries

X86_KINDS = ("host", "avx2", "portable")  # host: -march=native (VNNI here, else AVX2); avx2: haswell; portable: scalar


def reference(x: np.ndarray, weight: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, geo: Geometry,
              multiplier: np.ndarray, x_zero: int, y_zero: int, relu: bool, residual: np.ndarray | None = None,
              res_multiplier: float = 0.0, res_zero: int = 0) -> np.ndarray:  # fmt: skip
    """kernels/include/ac/compact_conv_int8.h, step by step: the kept im2col rows of the input padded with its zero
    point, exact integer sums (float64 matmul of integers below 2^53: exact), int -> float32, the products with the
    multipliers in float64 (exact), the residual added in float64, round half to even, clamp."""
    n, c, h, w = x.shape
    f, k = weight.shape
    kw = geo.kernel[1]
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    oh, ow = geo.out_size(h, w)
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), x_zero, np.float64)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    cols = np.empty((n, k, oh, ow))
    for i, row in enumerate(rows):
        tap, ch = divmod(int(row), c)  # tap-major: row = (kh * KW + kw) * C + c
        a, b = divmod(tap, kw)
        cols[:, i] = xp[:, ch, a * dh : a * dh + sh * (oh - 1) + 1 : sh, b * dw : b * dw + sw * (ow - 1) + 1 : sw]
    acc = np.matmul(weight.astype(np.float64), (cols - x_zero).reshape(n, k, -1)).astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)[:, None]
    assert np.abs(acc).max() < 2**31
    v = acc.astype(np.float32).astype(np.float64) * multiplier.astype(np.float64)[:, None]
    if residual is not None:
        v = v + (residual.reshape(n, f, -1).astype(np.float64) - res_zero) * np.float64(np.float32(res_multiplier))
    y = np.clip(np.rint(v) + y_zero, y_zero if relu else -128, 127)
    return y.astype(np.int8).reshape(n, f, oh, ow)


class Problem:
    """A random int8 conv: values, zero points, and multipliers that spread the outputs over the int8 range."""

    def __init__(self, seed: int, n: int, c: int, f: int, hw: tuple[int, int], kept: float | int, geo: Geometry,
                 residual: bool = False, extremes: bool = False) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        total = c * geo.kernel[0] * geo.kernel[1]
        k = kept if isinstance(kept, int) else max(1, round(kept * total))
        self.geo = geo
        self.rows = np.sort(rng.choice(total, size=k, replace=False)).astype(np.int64)
        if extremes:  # only -128 and 127, zero points at the ends: the largest products and sums there are
            self.x = rng.choice(np.array([-128, 127], np.int8), (n, c, *hw))
            self.weight = rng.choice(np.array([-128, 127], np.int8), (f, k))
            self.x_zero = int(rng.choice([-128, 127]))
        else:
            self.x = rng.integers(-128, 128, (n, c, *hw), dtype=np.int8)
            self.weight = rng.integers(-128, 128, (f, k), dtype=np.int8)
            self.x_zero = int(rng.integers(-128, 128))
        self.y_zero = int(rng.integers(-64, 64))  # not at an end: ReLU leaves a range to check
        self.bias = rng.integers(-20000, 20000, f).astype(np.int32)
        spread = 255 * 128 * np.sqrt(k) / 2 if not extremes else 255 * 128 * k / 4  # typical |acc|
        self.multiplier = (rng.uniform(0.5, 2.0, f) * 60 / spread).astype(np.float32)
        oh, ow = geo.out_size(*hw)
        self.residual = rng.integers(-128, 128, (n, f, oh, ow), dtype=np.int8) if residual else None
        self.res_multiplier, self.res_zero = float(np.float32(rng.uniform(0.2, 1.5))), int(rng.integers(-128, 128))

    def args(self) -> tuple:
        return self.x, self.weight, self.rows, self.bias, self.geo, self.multiplier, self.x_zero, self.y_zero

    def expected(self, relu: bool) -> np.ndarray:
        return reference(*self.args(), relu, self.residual, self.res_multiplier, self.res_zero)

    def run(self, kind: str, relu: bool, threads: int = 2) -> np.ndarray:
        return native.compact_conv2d_int8(*self.args(), relu=relu, residual=self.residual,
                                          res_multiplier=self.res_multiplier, res_zero=self.res_zero,
                                          threads=threads, kind=kind)  # fmt: skip


def assert_bit_exact(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.int8 and got.shape == want.shape, what
    diff = got.astype(np.int32) - want
    assert not diff.any(), f"{what}: {np.count_nonzero(diff)} of {diff.size} values differ (max {np.abs(diff).max()})"


def test_builds_take_the_expected_paths() -> None:
    assert native.int8_path("portable") == "scalar"
    assert native.int8_path("avx2") == "avx2"
    assert native.int8_path("host") in {"avx512-vnni", "avx-vnni", "avx2"}


@settings(max_examples=150, deadline=None)
@given(geo=geometries, c=st.integers(1, 19), f=st.integers(1, 70), h=st.integers(1, 21), w=st.integers(1, 21),
       kept=st.one_of(st.floats(0.01, 1.0), st.just(1), st.just(1.0)), relu=st.booleans(), residual=st.booleans(),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_bit_exact_on_random_shapes(geo, c, f, h, w, kept, relu, residual, seed) -> None:
    """Every x86 build against the reference: kernel 1-3, stride 1-2, padding 0-3, dilation 1-3, 1 %-100 % of the
    rows (one row, all rows), ReLU and the residual on and off, channel and pixel counts off the register tiles."""
    assume(min(geo.out_size(h, w)) >= 1)
    p = Problem(seed, 2, c, f, (h, w), kept, geo, residual)
    want = p.expected(relu)
    for kind in X86_KINDS:
        assert_bit_exact(p.run(kind, relu), want, kind)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(
    ("c", "f", "hw", "geo", "kept"),
    [
        (5, 1, (7, 9), Geometry((3, 3), (1, 1), (1, 1)), 0.9),  # 1 channel: 7 of the packed block's 8 rows empty
        (9, 17, (11, 7), Geometry((3, 3), (2, 1), (1, 0)), 0.7),  # 17 channels, 6 x 7 = 42 pixels
        (40, 65, (13, 13), Geometry((1, 1), (2, 2)), 1.0),  # 65 channels: two accumulator tiles; no padding
        (16, 37, (24, 25), Geometry((3, 3), (1, 1), (1, 1)), 0.5),  # 600 pixels: 10 tiles, the last of 24
        (70, 11, (5, 5), Geometry((3, 3), (1, 1), (1, 1)), 0.93),  # K = 586: 3 K blocks, not a multiple of 4
        (3, 8, (1, 13), Geometry((1, 3), (1, 1), (0, 1)), 3),  # 3 kept rows: one partial quad; 13 pixels
    ],
    ids=["f1", "f17-s2x1", "f65-1x1-s2", "fused-tiles", "k586", "k3"],
)
def test_register_tile_edges(c, f, hw, geo, kept, threads) -> None:
    """Partial register tiles and blocks, both ways of sharing out work (per-tile panels from 8 pixel tiles on),
    K across blocks and off the 4-row quads, two images, one and three threads, ReLU and the residual."""
    p = Problem(11, 2, c, f, hw, kept, geo, residual=True)
    want = p.expected(True)
    values = np.unique(want)
    assert len(values) > 20, "the outputs should spread over the int8 range"
    for kind in X86_KINDS:
        assert_bit_exact(p.run(kind, True, threads), want, kind)


@pytest.mark.parametrize("x_zero", [-128, 127])
def test_extreme_values_over_a_large_k(x_zero: int) -> None:
    """Inputs and weights only -128 / 127 and K = 4500 (products up to 255 x 128 once the zero point is taken off,
    sums past 2^24): u8 x s8 pairs summed in int16 (vpmaddubsw) would saturate; the kernel must not."""
    geo = Geometry((3, 3), (1, 1), (1, 1))
    p = Problem(3, 1, 512, 19, (6, 5), 4500, geo, residual=True, extremes=True)
    p.x_zero = x_zero
    p.x[:, :, :2] = -128  # whole rows of -128 x -128: the pair sum 32768 does not fit int16
    p.weight[:3] = -128
    want = p.expected(False)
    assert len(np.unique(want)) > 20
    for kind in X86_KINDS:
        assert_bit_exact(p.run(kind, False), want, kind)


def run_int8_file(cmd: list[str], tmp_path: Path, p: Problem, relu: bool) -> tuple[np.ndarray, str]:
    """kernels/tools/conv_int8_file (``cmd``: the executable behind qemu) on problem ``p``: its output and path."""
    n, c, h, w = p.x.shape
    f, k = p.weight.shape
    oh, ow = p.geo.out_size(h, w)
    files = {"x": p.x, "w": p.weight, "rows": p.rows, "bias": p.bias,
             "m": np.append(p.multiplier, np.float32(p.res_multiplier)).astype(np.float32)}  # fmt: skip
    for name, arr in files.items():
        arr.tofile(tmp_path / name)
    if p.residual is not None:
        p.residual.tofile(tmp_path / "res")
    geo = p.geo
    dims = [n, c, h, w, f, k, *geo.kernel, *geo.stride, *geo.padding, *geo.dilation, oh, ow, int(relu),
            p.x_zero, p.y_zero, p.res_zero]  # fmt: skip
    paths = [str(tmp_path / name) for name in files] + [str(tmp_path / "res") if p.residual is not None else "-"]
    done = subprocess.run([*cmd, *map(str, dims), *paths, str(tmp_path / "y")], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.fromfile(tmp_path / "y", np.int8).reshape(n, f, oh, ow), done.stdout.split()[-1]


AARCH64_PROBLEMS = [
    (Geometry((3, 3), (2, 1), (1, 2), (1, 2)), 11, 37, (13, 10), 0.4, True, True),  # residual, ReLU, dilated
    (Geometry((3, 3), (1, 1), (1, 1)), 16, 19, (24, 22), 1.0, False, False),  # all rows, per-tile panels
    (Geometry((1, 1)), 300, 9, (3, 5), 1.0, True, False),  # K = 300: two K blocks, no padding
]


@pytest.mark.parametrize(("exe", "path"), [("ac_conv_int8_file", "neon-sdot"), ("ac_conv_int8_file_nodot", "neon")])
def test_aarch64_builds_bit_exact_under_qemu(tmp_path: Path, exe: str, path: str) -> None:
    """The sdot build (armv8.2-a+dotprod) and the plain armv8-a build, under qemu-aarch64 -cpu max (dot product)."""
    binary = native.build("aarch64") / exe
    assert binary.read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    for i, (geo, c, f, hw, kept, residual, relu) in enumerate(AARCH64_PROBLEMS):
        p = Problem(20 + i, 2, c, f, hw, kept, geo, residual)
        got, ran = run_int8_file(["qemu-aarch64", "-cpu", "max", str(binary)], tmp_path, p, relu)
        assert ran == path
        assert_bit_exact(got, p.expected(relu), f"{exe} on problem {i}")
    p = Problem(5, 1, 256, 13, (5, 7), 2000, Geometry((3, 3), (1, 1), (1, 1)), residual=True, extremes=True)
    got, _ = run_int8_file(["qemu-aarch64", "-cpu", "max", str(binary)], tmp_path, p, False)
    assert_bit_exact(got, p.expected(False), f"{exe} on extreme values")


def test_sdot_build_needs_dot_product(tmp_path: Path) -> None:
    """The sdot path really runs sdot: on a CPU without dot product (cortex-a53) its build dies of an illegal
    instruction, while the plain build runs."""
    build = native.build("aarch64")
    p = Problem(1, 1, 4, 8, (5, 5), 1.0, Geometry((3, 3), (1, 1), (1, 1)))
    got, ran = run_int8_file(["qemu-aarch64", "-cpu", "cortex-a53", str(build / "ac_conv_int8_file_nodot")],
                             tmp_path, p, False)  # fmt: skip
    assert ran == "neon"
    assert_bit_exact(got, p.expected(False), "plain build on cortex-a53")
    with pytest.raises(AssertionError):
        run_int8_file(["qemu-aarch64", "-cpu", "cortex-a53", str(build / "ac_conv_int8_file")], tmp_path, p, False)


def test_packed_weights_can_be_reused() -> None:
    p = Problem(8, 1, 6, 10, (9, 9), 0.5, Geometry((3, 3), (1, 1), (1, 1)))
    for kind in ("host", "avx2"):
        packed = native.pack_weights_int8(p.weight, kind)
        got = native.compact_conv2d_int8(*p.args(), packed=packed, kind=kind)
        assert_bit_exact(got, p.expected(False), kind)
    with pytest.raises(ValueError, match="pack_weights_int8"):  # the AVX2 build packs int16: another size
        native.compact_conv2d_int8(*p.args(), packed=native.pack_weights_int8(p.weight, "portable"), kind="avx2")


def bad_inputs() -> list[tuple[str, dict, str]]:
    return [
        ("x float32", {"x": np.zeros((1, 3, 5, 5), np.float32)}, "x must be a int8 array"),
        ("x uint8", {"x": np.zeros((1, 3, 5, 5), np.uint8)}, "x must be a int8 array"),
        ("x 3-D", {"x": np.zeros((3, 5, 5), np.int8)}, "x must be a int8 array with 4 dimensions"),
        ("weight int16", {"weight": np.zeros((4, 27), np.int16)}, "weight must be a int8 array"),
        ("columns", {"weight": np.zeros((4, 26), np.int8)}, "26 columns for 27 kept rows"),
        ("bias int64", {"bias": np.zeros(4, np.int64)}, "bias must be a int32 array"),
        ("bias shape", {"bias": np.zeros(5, np.int32)}, r"bias shape \(5,\)"),
        ("multiplier float64", {"multiplier": np.ones(4)}, "multiplier must be a float32 array"),
        ("multiplier zero", {"multiplier": np.zeros(4, np.float32)}, "finite and > 0"),
        ("multiplier nan", {"multiplier": np.full(4, np.nan, np.float32)}, "finite and > 0"),
        ("zero point", {"x_zero": 128}, r"zero points must be inside \[-128, 127\]"),
        ("residual shape", {"residual": np.zeros((1, 4, 4, 4), np.int8)}, "residual shape"),
        ("residual dtype", {"residual": np.zeros((1, 4, 3, 3), np.float32)}, "residual must be a int8 array"),
        ("rows descending", {"rows": np.arange(27)[::-1].copy()}, "ascending"),
        ("rows float", {"rows": np.arange(27.0)}, "rows must be a 1-D integer array"),
        ("row outside", {"rows": np.arange(1, 28)}, "inside"),
    ]


@pytest.mark.parametrize(("case", "change", "message"), bad_inputs(), ids=[b[0] for b in bad_inputs()])
def test_bad_input_is_refused(case: str, change: dict, message: str) -> None:
    args = {"x": np.zeros((1, 3, 5, 5), np.int8), "weight": np.zeros((4, 27), np.int8), "rows": np.arange(27),
            "bias": None, "geo": Geometry((3, 3)), "multiplier": np.ones(4, np.float32),
            "x_zero": 0, "y_zero": 0}  # fmt: skip
    args.update(change)
    with pytest.raises(ValueError, match=message):
        native.compact_conv2d_int8(**args)


def test_too_many_rows_are_refused() -> None:
    k = 65537
    with pytest.raises(ValueError, match="more than 65536 kept rows"):
        native.compact_conv2d_int8(np.zeros((1, k, 1, 1), np.int8), np.zeros((1, k), np.int8), np.arange(k), None,
                                   Geometry((1, 1)), np.ones(1, np.float32), 0, 0)  # fmt: skip


# ---- onnxruntime's QDQ conv ----


def qdq_conv_model(p: Problem, x_scale: float, w_scale: np.ndarray, y_scale: float, res_scale: float, relu: bool,
                   unsigned: bool) -> bytes:  # fmt: skip
    """QuantizeLinear(act(Conv(DQ(x), DQ(w), DQ(bias)) [+ DQ(residual)])): the dense weight the kept rows describe
    (zeros elsewhere), per-channel weight scales, the bias at scale s_x * s_w. ``unsigned``: the activations as
    uint8 (x + 128 with zero point zx + 128: the same real values), the form onnxruntime's x86 QLinearConv takes."""
    c = p.x.shape[1]
    f = p.weight.shape[0]
    kh, kw = p.geo.kernel
    full = np.zeros((f, kh * kw * c), np.int8)
    full[:, p.rows] = p.weight
    dense = np.ascontiguousarray(full.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))  # tap-major rows -> [F, C, KH, KW]
    act, shift = (np.uint8, 128) if unsigned else (np.int8, 0)
    init = [
        numpy_helper.from_array(dense, "w_q"),
        numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(f, np.int8), "w_zero"),
        numpy_helper.from_array(p.bias, "b_q"),
        numpy_helper.from_array((np.float32(x_scale) * w_scale).astype(np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(f, np.int32), "b_zero"),
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(p.x_zero + shift, act), "x_zero"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(p.y_zero + shift, act), "y_zero"),
        numpy_helper.from_array(np.array(res_scale, np.float32), "r_scale"),
        numpy_helper.from_array(np.array(p.res_zero + shift, act), "r_zero"),
    ]
    geo = p.geo
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["x_f"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_f"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b_f"], axis=0),
        helper.make_node("Conv", ["x_f", "w_f", "b_f"], ["conv"], kernel_shape=list(geo.kernel),
                         strides=list(geo.stride), pads=[*geo.padding, *geo.padding], dilations=list(geo.dilation)),
    ]  # fmt: skip
    elem = TensorProto.UINT8 if unsigned else TensorProto.INT8
    inputs = [helper.make_tensor_value_info("x", elem, list(p.x.shape))]
    last = "conv"
    if p.residual is not None:
        inputs.append(helper.make_tensor_value_info("r", elem, list(p.residual.shape)))
        nodes += [helper.make_node("DequantizeLinear", ["r", "r_scale", "r_zero"], ["r_f"]),
                  helper.make_node("Add", ["conv", "r_f"], ["sum"])]  # fmt: skip
        last = "sum"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["act"]))
        last = "act"
    nodes.append(helper.make_node("QuantizeLinear", [last, "y_scale", "y_zero"], ["y"]))
    out = helper.make_tensor_value_info("y", elem, [p.x.shape[0], f, *geo.out_size(*p.x.shape[2:])])
    graph = helper.make_graph(nodes, "qdq_conv", inputs, [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("c", "f", "hw", "geo", "kept", "residual", "relu"),
    [
        (16, 24, (12, 12), Geometry((3, 3), (1, 1), (1, 1)), 0.6, False, False),
        (16, 24, (12, 12), Geometry((3, 3), (1, 1), (1, 1)), 0.6, False, True),
        (8, 13, (9, 11), Geometry((3, 3), (2, 2), (1, 1), (1, 2)), 0.3, True, True),
        (32, 20, (7, 7), Geometry((1, 1)), 1.0, True, False),
    ],
    ids=["3x3", "3x3-relu", "s2-dilated-residual-relu", "1x1-residual"],
)
@pytest.mark.parametrize("unsigned", [False, True], ids=["int8", "uint8"])
def test_within_one_step_of_onnxruntime(tmp_path: Path, c, f, hw, geo, kept, residual, relu, unsigned) -> None:
    """The same scales in onnxruntime's QDQ model: every output within one quantization step, nearly all equal.
    onnxruntime runs int8 activations in float here (its x86 build takes no int8 x int8 conv); with uint8
    activations it fuses the plain conv into its integer QLinearConv (checked), the others again in float."""
    p = Problem(31, 2, c, f, hw, kept, geo, residual)
    rng = np.random.default_rng(32)
    x_scale, w_scale = 0.02, rng.uniform(0.002, 0.01, f).astype(np.float32)
    y_scale = float(np.float32(x_scale * 0.006 * 255 * 128 * np.sqrt(len(p.rows)) / 2 / 127 * 1.5))
    res_scale = float(np.float32(y_scale * 0.5))
    p.multiplier = native.requant_multipliers(x_scale, w_scale, y_scale)
    p.res_multiplier = float(np.float32(res_scale / y_scale))
    ours = p.run("host", relu)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    model = qdq_conv_model(p, x_scale, w_scale, y_scale, res_scale, relu, unsigned)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    shift = 128 if unsigned else 0
    feeds = {"x": (p.x.astype(np.int16) + shift).astype(np.uint8 if unsigned else np.int8)}
    if p.residual is not None:
        feeds["r"] = (p.residual.astype(np.int16) + shift).astype(np.uint8 if unsigned else np.int8)
    theirs = session.run(["y"], feeds)[0].astype(np.int32) - shift
    if unsigned and not relu and not residual:
        assert "QLinearConv" in {n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node}
    assert theirs.shape == ours.shape and len(np.unique(theirs)) > 30
    assert np.mean(np.abs(theirs) == 127) < 0.1 or relu, "the outputs should not be mostly clipped"
    diff = np.abs(ours.astype(np.int32) - theirs)
    assert diff.max() <= 1, f"{np.count_nonzero(diff > 1)} outputs more than one step from onnxruntime's"
    assert np.mean(diff == 0) > 0.95
