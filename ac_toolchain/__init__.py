"""AutoCompress: automatic structured pruning of CNNs, compiled for phones.

The verbs are imported lazily so that ``ac --help`` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ac_toolchain.errors import ACError, CheckpointError, ConfigError, DataError, ModelError, TargetError

__version__ = "0.1.0"

_VERBS = {
    "compress": "ac_toolchain.compress",
    "count": "ac_toolchain.count",
    "build_model": "ac_toolchain.zoo",
    "load_dataset": "ac_toolchain.data",
    "trace": "ac_toolchain.graph",
    "prune": "ac_toolchain.prune",
    "uniform_prune": "ac_toolchain.prune",
    "compact": "ac_toolchain.compact",
    "export_onnx": "ac_toolchain.export",
    "resolve_config": "ac_toolchain.config",
}
__all__ = ["ACError", "CheckpointError", "ConfigError", "DataError", "ModelError", "TargetError", *_VERBS]


def __getattr__(name: str) -> Any:
    if name not in _VERBS:
        raise AttributeError(f"module 'ac_toolchain' has no attribute {name!r}")
    attr = "resolve" if name == "resolve_config" else name
    return getattr(importlib.import_module(_VERBS[name]), attr)
