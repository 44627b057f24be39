"""`--bench NAME` → Device (android_bench/devices.py)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from ac_toolchain.errors import DeviceError
from android_bench import devices
from android_bench.adb import AdbDevice
from android_bench.devices import get_device
from android_bench.fake import FakeTransport
from android_bench.host import HostDevice

FIXTURES = Path(__file__).parent / "fixtures"


def test_host() -> None:
    assert isinstance(get_device("host"), HostDevice)


def test_qemu_is_imported_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    class QemuDevice:
        name = "qemu-arm64"

        def __init__(self, **kw: object) -> None:
            self.kw = kw

    monkeypatch.setitem(sys.modules, "android_bench.qemu", types.SimpleNamespace(QemuDevice=QemuDevice))
    device = get_device("qemu-arm64", binary="/usr/bin/qemu-aarch64")
    assert isinstance(device, QemuDevice) and device.kw == {"binary": "/usr/bin/qemu-aarch64"}


@pytest.mark.parametrize("serial", ["R5CT1234ABC", "10.0.0.5:5555"])
def test_adb_with_a_serial_keeps_everything_after_the_first_colon(serial: str) -> None:
    fake = FakeTransport(FIXTURES / "written-like-pixel7", serial=serial)
    device = get_device(f"adb:{serial}", transport=fake)
    assert isinstance(device, AdbDevice) and device.name == f"adb:{serial}" and device.serial == serial
    assert device.fingerprint()["model"] == "Pixel 7"  # the keyword reached the constructor


def test_adb_alone_takes_the_only_phone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_serials", lambda: ["ONLY1"])
    device = get_device("adb", transport=FakeTransport(FIXTURES / "written-like-pixel7", serial="ONLY1"))
    assert device.name == "adb:ONLY1"


def test_adb_alone_with_no_phone_says_how_to_attach_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_serials", lambda: [])
    with pytest.raises(DeviceError, match="no phone is attached.*USB debugging.*adb devices"):
        get_device("adb")


def test_adb_alone_with_two_phones_lists_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_serials", lambda: ["A1", "B2"])
    with pytest.raises(DeviceError, match=r"2 phones are attached \(adb:A1, adb:B2\)"):
        get_device("adb")


@pytest.mark.parametrize("name", ["phone", "host:2", "qemu-arm64:x", "ADB:1", ""])
def test_unknown_names_list_the_choices(name: str) -> None:
    choices = "host, qemu-arm64, callgrind, adb:<serial>"
    with pytest.raises(DeviceError, match=rf"unknown device {name!r}; choose one of: {choices}"):
        get_device(name)
