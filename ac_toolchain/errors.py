"""Errors a user can act on. Every message says what went wrong and what to do about it."""

from android_bench.errors import DeviceError

__all__ = ["USER_ERRORS", "ACError", "CheckpointError", "ConfigError", "DataError", "DeviceError", "ModelError",
           "TargetError", "TrainingError"]  # fmt: skip


class ACError(Exception):
    """Base class of every error AutoCompress raises on purpose."""


class ConfigError(ACError):
    """A recipe key, CLI flag or value is unknown or out of range."""


class ModelError(ACError):
    """A model name, builder file or architecture cannot be used."""


class DataError(ACError):
    """A dataset spec, folder or file is missing or malformed."""


class CheckpointError(ACError):
    """A checkpoint or run directory is missing, corrupt or does not match the model."""


class TargetError(ACError):
    """A compile target is unknown or its toolchain is missing."""


class TrainingError(ACError):
    """A training ended with a model not worth going on with (a dense model at chance)."""


# The bench harness (android_bench) stands alone and raises its own DeviceError; the CLI treats both as the
# user's to fix: one clear line, exit code 2.
USER_ERRORS: tuple[type[Exception], ...] = (ACError, DeviceError)
