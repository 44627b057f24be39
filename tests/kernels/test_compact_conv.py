"""The C++ gather-GEMM conv (kernels/) against torch: random shapes, odd sizes, stride / padding / dilation,
1 kept column and all columns; the aarch64 build (NEON) under qemu-user; errors for inconsistent shapes."""

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ac_toolchain import native
from ac_toolchain.compact.modules import tap_major_rows
from ac_toolchain.native import Geometry


def reference(x: np.ndarray, weight: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, geo: Geometry,
              relu: bool) -> np.ndarray:  # fmt: skip
    """torch conv2d with the dense weight that the kept rows describe (zeros elsewhere)."""
    c = x.shape[1]
    full = np.zeros((weight.shape[0], geo.kernel[0] * geo.kernel[1] * c), np.float32)
    full[:, rows] = weight  # tap-major columns
    order = tap_major_rows(c, *geo.kernel).numpy()  # (c, kh, kw) order -> tap-major row
    dense = torch.from_numpy(full[:, order].reshape(weight.shape[0], c, *geo.kernel))
    y = torch.nn.functional.conv2d(torch.from_numpy(x), dense, None if bias is None else torch.from_numpy(bias),
                                   geo.stride, geo.padding, geo.dilation)  # fmt: skip
    return (torch.relu(y) if relu else y).numpy()


def problem(seed: int, n: int, c: int, f: int, hw: tuple[int, int], kept: float | int, geo: Geometry):
    rng = np.random.default_rng(seed)
    total = c * geo.kernel[0] * geo.kernel[1]
    k = kept if isinstance(kept, int) else max(1, round(kept * total))
    rows = np.sort(rng.choice(total, size=k, replace=False)).astype(np.int64)
    x = rng.standard_normal((n, c, *hw)).astype(np.float32)
    weight = rng.standard_normal((f, k)).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    return x, weight, rows, bias


geometries = st.builds(
    Geometry,
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)


@settings(max_examples=150, deadline=None)
@given(geo=geometries, c=st.integers(1, 19), f=st.integers(1, 70), h=st.integers(1, 21), w=st.integers(1, 21),
       kept=st.floats(0.01, 1.0), relu=st.booleans(), seed=st.integers(0, 2**16))  # fmt: skip
def test_matches_torch_on_random_shapes(geo, c, f, h, w, kept, relu, seed) -> None:
    assume(min(geo.out_size(h, w)) >= 1)
    x, weight, rows, bias = problem(seed, 2, c, f, (h, w), kept, geo)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=relu, threads=2)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, relu), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kept", [1, 1.0], ids=["one-column", "all-columns"])
@pytest.mark.parametrize(
    "shape", [(3, 5, (7, 7)), (64, 130, (16, 16)), (300, 7, (3, 3)), (7, 75, (33, 40)), (16, 40, (32, 32))], ids=str
)
def test_edge_cases_without_bias(kept, shape) -> None:
    """33x40 one-column: the fused-gather path (one channel read, the other planes left alone); all columns at
    32x32 and 33x40: the implicit (no-gather) path; at 16x16 (25 % extra virtual columns) the two-phase gather."""
    c, f, hw = shape
    geo = Geometry((3, 3), (1, 1), (1, 1))
    x, weight, rows, _ = problem(1, 1, c, f, hw, kept, geo)
    got = native.compact_conv2d(x, weight, rows, None, geo, threads=2)
    np.testing.assert_allclose(got, reference(x, weight, rows, None, geo, False), rtol=1e-4, atol=2e-4)


def test_large_k_spans_several_panels() -> None:
    geo = Geometry((3, 3), (2, 2), (1, 1))
    x, weight, rows, bias = problem(2, 1, 256, 96, (9, 11), 0.7, geo)  # K = 1613 > 6 panels of 256
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=True, threads=2)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True), rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize(
    ("rows", "message"),
    [([3, 1], "ascending"), ([0, 0], "ascending"), ([27], "inside"), ([-1], "inside")],
)
def test_bad_rows_are_refused(rows, message) -> None:
    x = np.zeros((1, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=message):
        native.compact_conv2d(x, np.zeros((2, len(rows)), np.float32), np.array(rows), None, Geometry((3, 3)))


def test_aarch64_build_matches_torch_under_qemu(tmp_path: Path) -> None:
    exe = native.build("aarch64") / "ac_conv_file"
    assert exe.read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    geo = Geometry((3, 3), (2, 1), (1, 2), (1, 2))
    x, weight, rows, bias = problem(3, 2, 11, 37, (13, 10), 0.4, geo)
    files = {"x": x, "w": weight, "rows": rows, "bias": bias}
    for name, arr in files.items():
        arr.tofile(tmp_path / name)
    oh, ow = geo.out_size(13, 10)
    dims = [2, 11, 13, 10, 37, len(rows), *geo.kernel, *geo.stride, *geo.padding, *geo.dilation, oh, ow, 1]
    cmd = ["qemu-aarch64", str(exe), *map(str, dims), *(str(tmp_path / n) for n in files), str(tmp_path / "y")]
    subprocess.run(cmd, check=True, timeout=120)
    got = np.fromfile(tmp_path / "y", np.float32).reshape(2, 37, oh, ow)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("f", "k"), [(1, 1), (8, 3), (13, 40)])
def test_numpy_packing_matches_the_library(f: int, k: int) -> None:
    weight = np.random.default_rng(f).standard_normal((f, k)).astype(np.float32)
    lib = native.load()
    lib.ac_conv_packed_size.restype = ctypes.c_size_t
    out = np.full(lib.ac_conv_packed_size(f, k), np.nan, np.float32)
    lib.ac_conv_pack_weights(f, k, weight.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
    np.testing.assert_array_equal(native.pack_weights(weight).ravel(), out)
