"""Errors a user can act on. Every message says what went wrong and what to do about it."""


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


class DeviceError(ACError):
    """A bench device is missing, busy, went away mid-run, or its runner failed."""
