"""One bench per device (android_bench/lock.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ac_toolchain.errors import DeviceError
from android_bench.lock import DeviceLock, lock_path


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AC_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_lock_file_lives_in_the_cache_under_a_safe_name(cache: Path) -> None:
    assert lock_path("adb:10.0.0.5:5555") == cache / "locks" / "adb_10.0.0.5_5555.lock"


def test_second_holder_fails_with_the_pid_and_the_lock_is_free_after_exit() -> None:
    with DeviceLock("adb:PHONE1") as held:
        assert held.path.read_text().strip() == str(os.getpid())
        with pytest.raises(DeviceError, match=rf"adb:PHONE1 is in use by another bench \(pid {os.getpid()}\)"):
            DeviceLock("adb:PHONE1").__enter__()
        with DeviceLock("adb:PHONE2"):  # another phone is not blocked
            pass
    with DeviceLock("adb:PHONE1"):  # released on exit
        pass


def test_lock_is_released_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), DeviceLock("host"):
        raise RuntimeError("boom")
    with DeviceLock("host"):
        pass


REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from android_bench.lock import DeviceLock
with DeviceLock("adb:SHARED"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_works_across_processes(cache: Path) -> None:
    env = {**os.environ, "AC_CACHE_DIR": str(cache)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(DeviceError, match=rf"in use by another bench \(pid {child.pid}\)"):
            DeviceLock("adb:SHARED").__enter__()
    finally:
        child.stdin.close()  # the child leaves its `with`, then exits
        child.wait(timeout=30)
    with DeviceLock("adb:SHARED"):
        pass
