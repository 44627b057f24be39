"""Guards shared by every test module."""

from collections.abc import Iterator

import pytest
import torch

THREADS = torch.get_num_threads()  # read when this file loads, before any test module is imported


@pytest.fixture(autouse=True, scope="module")
def _thread_count_kept() -> Iterator[None]:
    """Results depend on torch's intra-op thread count (float sums change order), and several tests compare an
    in-process run with a subprocess. A module that sets the count for itself must set it back."""
    assert torch.get_num_threads() == THREADS, "a test module changed torch's thread count and kept it changed"
    yield
    assert torch.get_num_threads() == THREADS, "a test module changed torch's thread count and kept it changed"
