"""One bench per device at a time: two benches sharing a phone would heat it and steal each other's cores.

An advisory `flock` on `<cache>/locks/<device>.lock` (cache: `$AC_CACHE_DIR`, default ~/.cache/autocompress).
The kernel drops the lock when its holder exits or crashes, so a stale file never blocks anyone; the file
only carries the holder's pid for the error message and is never deleted (deleting lock files races).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from types import TracebackType

from android_bench.errors import DeviceError


def cache_dir() -> Path:
    """Where AutoCompress keeps what outlives a run (kernel builds, latency cells, device locks): $AC_CACHE_DIR."""
    return Path(os.environ.get("AC_CACHE_DIR", Path.home() / ".cache" / "autocompress"))


def lock_path(device: str) -> Path:
    """Where the lock of `device` lives; names such as `adb:10.0.0.5:5555` become file-name safe."""
    return cache_dir() / "locks" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


class DeviceLock:
    """`with DeviceLock("adb:XYZ"):` — fails at once (no waiting) when another process holds the device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.path = lock_path(device)
        self._fd: int | None = None

    def __enter__(self) -> DeviceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DeviceError(
                f"device {self.device} is in use by another bench (pid {holder}); wait for it to finish "
                f"or stop that process (lock file {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
