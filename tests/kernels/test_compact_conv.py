"""The C++ compact conv (kernels/: direct and pixel-row paths on AVX2, gather-GEMM elsewhere) against torch: random
shapes, odd sizes, stride / padding / dilation, 1 kept column and all columns, partial register tiles, the residual;
the gather-GEMM paths in a baseline x86-64 build, the aarch64 build (NEON) under qemu-user; errors for inconsistent
shapes."""

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
from tests.kernels.strategies import geometries


def reference(x: np.ndarray, weight: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, geo: Geometry,
              relu: bool, residual: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """torch conv2d with the dense weight that the kept rows describe (zeros elsewhere), plus the residual."""
    c = x.shape[1]
    full = np.zeros((weight.shape[0], geo.kernel[0] * geo.kernel[1] * c), np.float32)
    full[:, rows] = weight  # tap-major columns
    order = tap_major_rows(c, *geo.kernel).numpy()  # (c, kh, kw) order -> tap-major row
    dense = torch.from_numpy(full[:, order].reshape(weight.shape[0], c, *geo.kernel))
    y = torch.nn.functional.conv2d(torch.from_numpy(x), dense, None if bias is None else torch.from_numpy(bias),
                                   geo.stride, geo.padding, geo.dilation)  # fmt: skip
    y = y if residual is None else y + torch.from_numpy(residual)
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
    """33x40 one-column reads one channel and leaves the other planes alone. On AVX2 builds: the pixel-row path at
    16x16 / 32x32 (up to 512 rows), the direct path elsewhere; other builds: the implicit (no-gather) GEMM at 32x32 /
    33x40 with all columns, the two-phase gather at 16x16 (see test_portable_x86_build_matches_torch)."""
    c, f, hw = shape
    geo = Geometry((3, 3), (1, 1), (1, 1))
    x, weight, rows, _ = problem(1, 1, c, f, hw, kept, geo)
    got = native.compact_conv2d(x, weight, rows, None, geo, threads=2)
    np.testing.assert_allclose(got, reference(x, weight, rows, None, geo, False), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("c", "f", "hw", "geo"),
    [
        (5, 1, (7, 9), Geometry((3, 3), (1, 1), (1, 1))),  # 1 channel: one packed block, 7 of its 8 rows empty
        (9, 17, (11, 7), Geometry((3, 3), (2, 1), (1, 0))),  # 3 blocks: a pair and a single; 6x7 pixels
        (40, 37, (13, 13), Geometry((1, 1), (2, 2))),  # 1x1 stride 2, 49 pixels: a 48-pixel chunk and one more
        (16, 24, (50, 3), Geometry((3, 3), (1, 1), (2, 1), (2, 1))),  # dilated, tall and thin
    ],
    ids=["f1", "f17-s2x1", "1x1-s2", "dilated"],
)
def test_register_tile_edges(c, f, hw, geo, threads) -> None:
    """Channel counts that leave partial register tiles (1, 17, 37 = 4 x 8 + 5), pixel counts that are not
    multiples of the 6-pixel tile or the 8 x 8 transposed store, with ReLU, two images, one and two threads."""
    x, weight, rows, bias = problem(4, 2, c, f, hw, 0.9, geo)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=True, threads=threads)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("c", "f", "hw", "geo"),
    [
        (4, 1, (3, 8), Geometry((3, 3), (1, 1), (1, 1))),  # one channel, 3 pixel vectors: a pair and a single
        (12, 29, (16, 16), Geometry((3, 3), (1, 1), (1, 1))),  # 29 filters: tiles of 5, 6, 6, 6, 6
        (16, 57, (9, 16), Geometry((3, 3), (2, 1), (1, 1))),  # stride 2 down, 1 across: rows 2 input rows apart
        (8, 13, (5, 24), Geometry((3, 3), (1, 1), (2, 2), (2, 2))),  # dilated; 15 vectors: chunks of 8 and 7
    ],
    ids=["f1-3vectors", "f29", "s2x1", "dilated"],
)
def test_pixel_row_tiles(c, f, hw, geo, threads) -> None:
    """Output rows of whole 8-pixel vectors, stride 1 across (the pixel-row path on AVX2; elsewhere the
    gather-GEMM): channel counts that cut into uneven tiles, vector counts off the 2-vector tile and the 8-vector
    work item, the residual and ReLU, two images, one and two threads."""
    x, weight, rows, bias = problem(7, 2, c, f, hw, 0.6, geo)
    residual = np.random.default_rng(8).standard_normal((2, f, *geo.out_size(*hw))).astype(np.float32)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=True, threads=threads, residual=residual)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True, residual), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [3, 20])
@pytest.mark.parametrize(
    ("c", "f", "hw", "geo"),
    [
        (3, 32, (32, 32), Geometry((3, 3), (1, 1), (1, 1))),  # the stem: 3 channels to copy in 6 or 40 pieces
        (64, 40, (9, 9), Geometry((3, 3), (2, 2), (1, 1))),  # few items: threads that find nothing left
        (40, 37, (13, 13), Geometry((1, 1), (2, 2))),  # unpadded: no copy
    ],
    ids=["stem", "s2", "1x1-s2"],
)
def test_more_threads_than_cores_and_shares(c, f, hw, geo, threads) -> None:
    """3 threads on this 2-core machine (some start late and take items from the others' shares), 20 threads (more
    than the 16 shares: threads share one; more copy pieces than channels), the residual and ReLU, two images."""
    x, weight, rows, bias = problem(9, 2, c, f, hw, 0.8, geo)
    residual = np.random.default_rng(10).standard_normal((2, f, *geo.out_size(*hw))).astype(np.float32)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=True, threads=threads, residual=residual)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True, residual), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("c", "f", "hw", "geo"),
    [
        (6, 20, (9, 13), Geometry((3, 3), (1, 1), (2, 3))),  # padding past a whole kernel row
        (5, 11, (7, 6), Geometry((3, 3), (2, 2), (1, 2), (2, 1))),  # stride 2, dilated rows
        (3, 9, (20, 16), Geometry((17, 3), (1, 1), (8, 1))),  # a 17-row kernel: several rows skipped at top and bottom
        (4, 7, (2, 8), Geometry((3, 3), (1, 1), (1, 1))),  # two output rows: each skips a kernel row
    ],
    ids=["pad2", "s2-dilated", "17x3", "2-rows"],
)
def test_border_taps_are_skipped_exactly(c, f, hw, geo) -> None:
    """Tiles skip the kept rows that read only the zero border above or below the input: must not change a value,
    for paddings of more than one kernel row, dilation, stride 2 and a 17-row kernel (direct path: 9 x 13, 7 x 6;
    pixel-row path on AVX2: 20 x 16, 2 x 8)."""
    x, weight, rows, bias = problem(11, 2, c, f, hw, 0.7, geo)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=False, threads=2)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, False), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("c", "kept"), [(24, 3), (3, 1.0), (24, 1.0)], ids=["3-of-216", "27-of-27", "216-of-216"])
@pytest.mark.parametrize("hw", [(16, 16), (32, 32), (9, 7)], ids=str)
def test_residual_is_added_before_relu(c, kept, hw) -> None:
    """y = relu(conv + bias + residual), a ResNet block's end: on AVX2 builds the pixel-row path at 16x16 / 32x32 and
    the direct path at 9x7; the gather-GEMM (two-phase at 9x7, per-tile at 16x16, implicit at 32x32) elsewhere."""
    geo = Geometry((3, 3), (1, 1), (1, 1))
    x, weight, rows, bias = problem(5, 2, c, 19, hw, kept, geo)
    residual = np.random.default_rng(6).standard_normal((2, 19, *hw)).astype(np.float32)
    got = native.compact_conv2d(x, weight, rows, bias, geo, relu=True, threads=2, residual=residual)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True, residual), rtol=1e-4, atol=2e-4)


def test_residual_of_another_shape_is_refused() -> None:
    geo = Geometry((3, 3), (1, 1), (1, 1))
    x, weight, rows, bias = problem(5, 1, 4, 6, (5, 5), 1.0, geo)
    with pytest.raises(ValueError, match="residual shape"):
        native.compact_conv2d(x, weight, rows, bias, geo, residual=np.zeros((1, 6, 4, 4), np.float32))


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


def run_conv_file(cmd: list[str], tmp_path: Path, n: int, c: int, f: int, hw: tuple[int, int], kept: float | int,
                  geo: Geometry) -> None:  # fmt: skip
    """kernels/tools/conv_file (``cmd``: the executable, maybe behind qemu) on a random problem, against torch."""
    x, weight, rows, bias = problem(3, n, c, f, hw, kept, geo)
    files = {"x": x, "w": weight, "rows": rows, "bias": bias}
    for name, arr in files.items():
        arr.tofile(tmp_path / name)
    oh, ow = geo.out_size(*hw)
    dims = [n, c, *hw, f, len(rows), *geo.kernel, *geo.stride, *geo.padding, *geo.dilation, oh, ow, 1]
    paths = [str(tmp_path / name) for name in files]
    subprocess.run([*cmd, *map(str, dims), *paths, str(tmp_path / "y")], check=True, timeout=120)
    got = np.fromfile(tmp_path / "y", np.float32).reshape(n, f, oh, ow)
    np.testing.assert_allclose(got, reference(x, weight, rows, bias, geo, True), rtol=1e-4, atol=2e-4)


def test_aarch64_build_matches_torch_under_qemu(tmp_path: Path) -> None:
    exe = native.build("aarch64") / "ac_conv_file"
    assert exe.read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    geo = Geometry((3, 3), (2, 1), (1, 2), (1, 2))
    run_conv_file(["qemu-aarch64", str(exe)], tmp_path, 2, 11, 37, (13, 10), 0.4, geo)


@pytest.mark.parametrize(
    ("c", "f", "hw", "kept"),
    [
        (3, 5, (7, 7), 1),
        (64, 70, (16, 16), 1.0),
        (16, 40, (32, 32), 1.0),
        (24, 19, (32, 32), 3),
        (7, 75, (33, 40), 1.0),
    ],
    ids=["two-phase-1-row", "two-phase-16x16", "implicit-32x32", "per-tile-32x32", "implicit-33x40"],
)
def test_portable_x86_build_matches_torch(tmp_path: Path, c, f, hw, kept) -> None:
    """The gather-GEMM paths (AVX2 builds take the direct and pixel-row paths instead; AVX-512 and NEON builds take
    these): a baseline x86-64 build, on shapes that pick each path."""
    exe = native.build("portable") / "ac_conv_file"
    run_conv_file([str(exe)], tmp_path, 2, c, f, hw, kept, Geometry((3, 3), (1, 1), (1, 1)))


@pytest.mark.parametrize(("f", "k"), [(1, 1), (8, 3), (13, 40)])
def test_numpy_packing_matches_the_library(f: int, k: int) -> None:
    weight = np.random.default_rng(f).standard_normal((f, k)).astype(np.float32)
    lib = native.load()
    lib.ac_conv_packed_size.restype = ctypes.c_size_t
    out = np.full(lib.ac_conv_packed_size(f, k), np.nan, np.float32)
    lib.ac_conv_pack_weights(f, k, weight.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
    np.testing.assert_array_equal(native.pack_weights(weight).ravel(), out)
