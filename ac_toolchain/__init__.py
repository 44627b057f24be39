"""AutoCompress: automatic structured pruning of CNNs, compiled for phones."""

from ac_toolchain.errors import ACError, CheckpointError, ConfigError, DataError, ModelError, TargetError

__all__ = ["ACError", "CheckpointError", "ConfigError", "DataError", "ModelError", "TargetError"]
__version__ = "0.1.0"
