"""How the host talks to a phone: a four-member `Transport`, with adb (via adbutils) as the real one.

AdbDevice only sees this protocol, so tests swap in `fake.FakeTransport` (recorded phone output). Contract:
commands arrive as one string, already quoted by the caller; every failure to reach the phone is a DeviceError
(use `unreachable()` so the real and the fake transport say the same thing). A stream that simply ends is not
an error here: the caller decides from what it read whether the command finished.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import adbutils

from android_bench.errors import DeviceError

ADB_HINT = (
    "check that the phone is plugged in and listed as 'device' by `adb devices` (or `python -m adbutils -l`): "
    "'unauthorized' means unlock it and accept the USB-debugging prompt; 'offline' or not listed means replug "
    "the cable (and re-enable USB debugging in Developer options if it still does not show)"
)
SERVER_HINT = (
    "start it with `adb start-server`; without the Android platform tools, the adb that ships with adbutils "
    "starts it too: `python -m adbutils -l`"
)
_ADB_FAILURES = (adbutils.AdbError, OSError, EOFError)  # OSError covers ConnectionError and socket timeouts


class Transport(Protocol):
    serial: str

    def shell(self, cmd: str, timeout: float = 60.0) -> str:
        """Run `cmd` (one quoted shell string) and return its output (stdout and stderr, as adb merges them)."""
        ...

    def shell_stream(self, cmd: str) -> Iterator[str]:
        """Run `cmd` and yield its output lines as they come (no trailing newline)."""
        ...

    def push(self, local: Path, remote: str) -> None:
        """Copy one file to the phone, creating the remote folder."""
        ...


def unreachable(serial: str, reason: str) -> DeviceError:
    return DeviceError(f"adb:{serial} is not reachable ({reason}); {ADB_HINT}")


class AdbTransport:
    """A phone through the adb server on 127.0.0.1:5037 (adbutils starts the server when it is not running)."""

    def __init__(self, serial: str, client: Any = None, idle_timeout: float = 600.0) -> None:
        self.serial = serial
        self.idle_timeout = idle_timeout  # a streamed command silent this long counts as a lost phone
        self._device = (client or _client()).device(serial)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except _ADB_FAILURES as exc:
            raise unreachable(self.serial, f"{type(exc).__name__}: {exc}") from exc

    def shell(self, cmd: str, timeout: float = 60.0) -> str:
        with self._errors():
            return str(self._device.shell(cmd, timeout=timeout))

    def shell_stream(self, cmd: str) -> Iterator[str]:
        with self._errors():
            conn = self._device.shell(cmd, stream=True)
            conn.conn.settimeout(self.idle_timeout)
            with conn, conn.conn.makefile("rb") as lines:
                for raw in lines:
                    yield raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def push(self, local: Path, remote: str) -> None:
        with self._errors():
            self._device.sync.push(local, remote)


def _client() -> Any:
    return adbutils.AdbClient(host="127.0.0.1", port=5037)


def list_serials(client: Any = None) -> list[str]:
    """Serials of the phones adb lists as ready ('device'; unauthorized and offline ones are left out)."""
    try:
        return [str(d.serial) for d in (client or _client()).device_list()]
    except (*_ADB_FAILURES, subprocess.SubprocessError) as exc:
        raise DeviceError(f"cannot reach the adb server on 127.0.0.1:5037 ({exc}); {SERVER_HINT}") from exc
