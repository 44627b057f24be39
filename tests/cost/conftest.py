"""Shared fixtures of the cost tests: the search tests' one-thread fixture (tiny models)."""

from tests.search.conftest import _one_thread

__all__ = ["_one_thread"]
