"""The bench harness's one error: a bench device is missing, busy, went away mid-run, or its runner failed.
The toolchain that drives this harness re-exports it: its DeviceError is this class."""


class DeviceError(RuntimeError):
    """A bench device is missing, busy, went away mid-run, or its runner failed; the message says what to do."""
