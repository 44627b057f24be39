"""`--bench NAME` → a Device. One registry entry per kind: `host`, `qemu-arm64`, `callgrind`, `adb:<serial>`, `adb`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from android_bench.adb import AdbDevice
from android_bench.device import Device
from android_bench.errors import DeviceError
from android_bench.host import HostDevice
from android_bench.transport import list_serials

USB_HINT = (
    "on the phone enable Developer options (tap Settings → About phone → Build number 7 times), turn on "
    "USB debugging, plug it in and accept the 'Allow USB debugging?' prompt; `adb devices` must list it"
)


def _host(arg: str | None, **kw: Any) -> Device:
    return HostDevice(**kw)


def _qemu(arg: str | None, **kw: Any) -> Device:
    from android_bench.qemu import QemuDevice  # needs qemu-user; imported only when asked for

    return QemuDevice(**kw)


def _callgrind(arg: str | None, **kw: Any) -> Device:
    from android_bench.callgrind import CallgrindDevice  # needs valgrind; imported only when asked for

    return CallgrindDevice(**kw)


def _adb(serial: str | None, **kw: Any) -> Device:
    if serial:
        return AdbDevice(serial, **kw)
    serials = list_serials()
    if len(serials) == 1:
        return AdbDevice(serials[0], **kw)
    if not serials:
        raise DeviceError(f"--bench adb: no phone is attached; {USB_HINT}")
    choices = ", ".join(f"adb:{s}" for s in serials)
    raise DeviceError(f"--bench adb: {len(serials)} phones are attached ({choices}); name one: --bench adb:<serial>")


@dataclass(frozen=True)
class Kind:
    make: Callable[..., Device]  # (part after ':' or None, **constructor keywords) → Device
    usage: str  # how error messages show it
    takes_arg: bool = False


DEVICES: dict[str, Kind] = {  # keyed by the name before the first ':'
    "host": Kind(_host, "host"),
    "qemu-arm64": Kind(_qemu, "qemu-arm64"),
    "callgrind": Kind(_callgrind, "callgrind"),
    "adb": Kind(_adb, "adb:<serial>, adb (the only attached phone)", takes_arg=True),
}


def check_name(name: str) -> tuple[Kind, str | None]:
    """The registry entry of `name` and its argument; a DeviceError listing the choices if there is none."""
    prefix, sep, arg = name.partition(":")
    kind = DEVICES.get(prefix)
    if kind is None or (sep and not kind.takes_arg):
        choices = ", ".join(k.usage for k in DEVICES.values())
        raise DeviceError(f"unknown device {name!r}; choose one of: {choices}")
    return kind, arg or None


def get_device(name: str, **kw: Any) -> Device:
    """The device called `name`; keyword arguments go to its constructor (tests pass a fake transport)."""
    kind, arg = check_name(name)
    return kind.make(arg, **kw)
