"""The bench harness's one error: a bench device is missing, busy, went away mid-run, or its runner failed.
ac_toolchain re-exports it (ac_toolchain.errors.DeviceError is this class)."""


class DeviceError(RuntimeError):
    """A bench device is missing, busy, went away mid-run, or its runner failed; the message says what to do."""
