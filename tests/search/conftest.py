"""Shared fixtures of the search tests."""

from collections.abc import Iterator

import pytest

from ac_toolchain.graph import one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These models are tiny: on shared cores torch's intra-op threads only contend (80 s instead of 15 s)."""
    with one_thread():
        yield
