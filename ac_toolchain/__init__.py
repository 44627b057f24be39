"""AutoCompress: automatic structured pruning of CNNs, compiled for phones.

The verbs are imported lazily so that ``ac --help`` does not wait for torch. Four verbs share their name
with a subpackage (``prune``, ``compact``, ``count``, ``compress``); Python sets ``ac_toolchain.<sub>`` to the
submodule the first time it is imported, which would make ``ac.prune`` a module or a function depending on
import order. ``_Package`` refuses that assignment, so ``ac.prune`` is always the verb; reach the subpackages
with ``from ac_toolchain.prune import schemes``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ac_toolchain.errors import (
    ACError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelError,
    TargetError,
    TrainingError,
)

if TYPE_CHECKING:  # what type checkers see; at run time the verbs load on first use (__getattr__ below)
    from ac_toolchain.compact import compact
    from ac_toolchain.compress import compress
    from ac_toolchain.config import resolve as resolve_config
    from ac_toolchain.count import count
    from ac_toolchain.coverage import explain
    from ac_toolchain.data import load_dataset
    from ac_toolchain.export import export_onnx
    from ac_toolchain.graph import trace
    from ac_toolchain.prune import prune
    from ac_toolchain.zoo import build_model

__version__ = "0.1.0"

_VERBS = {
    "compress": "ac_toolchain.compress",
    "count": "ac_toolchain.count",
    "explain": "ac_toolchain.coverage",
    "build_model": "ac_toolchain.zoo",
    "load_dataset": "ac_toolchain.data",
    "trace": "ac_toolchain.graph",
    "prune": "ac_toolchain.prune",
    "compact": "ac_toolchain.compact",
    "export_onnx": "ac_toolchain.export",
    "resolve_config": "ac_toolchain.config",
}
__all__ = [
    "ACError", "CheckpointError", "ConfigError", "DataError", "ModelError", "TargetError", "TrainingError",
    "build_model", "compact", "compress", "count", "explain", "export_onnx", "load_dataset", "prune", "resolve_config",
    "trace",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _VERBS:
        raise AttributeError(f"module 'ac_toolchain' has no attribute {name!r}")
    attr = "resolve" if name == "resolve_config" else name
    return getattr(importlib.import_module(_VERBS[name]), attr)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _VERBS and isinstance(value, types.ModuleType):
            return  # a submodule import must not shadow the verb of the same name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
