"""Hypothesis strategies shared by the kernel tests."""

from hypothesis import strategies as st

from ac_toolchain.native import Geometry

# conv geometries the kernels must take: kernel 1-3, stride 1-2, padding 0-3, dilation 1-3 (each direction)
geometries = st.builds(
    Geometry,
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
