"""AdbTransport's use of adbutils and its error mapping, with a stub adbutils client (no adb server needed)."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import adbutils
import pytest
from adbutils.errors import AdbConnectionError

from ac_toolchain.errors import DeviceError
from android_bench.transport import AdbTransport, list_serials


class StubConnection:
    """What adbutils returns for `shell(..., stream=True)`: an object whose `.conn` is the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.conn = sock

    def __enter__(self) -> StubConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class StubDevice:
    def __init__(self, result: Any = "", push_error: Exception | None = None) -> None:
        self.result, self.calls, self.pushed = result, [], []  # type: ignore[var-annotated]
        self.sync = SimpleNamespace(push=self._push)
        self._push_error = push_error

    def shell(self, cmd: str, stream: bool = False, timeout: float | None = None) -> Any:
        self.calls.append((cmd, stream, timeout))
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def _push(self, local: Path, remote: str) -> None:
        if self._push_error:
            raise self._push_error
        self.pushed.append((local, remote))


class StubClient:
    def __init__(self, device: StubDevice | None = None, serials: list[str] | None = None, error: Any = None):
        self._device, self._serials, self._error = device, serials or [], error
        self.asked: str | None = None

    def device(self, serial: str) -> StubDevice:
        self.asked = serial
        assert self._device is not None
        return self._device

    def device_list(self) -> list[SimpleNamespace]:
        if self._error:
            raise self._error
        return [SimpleNamespace(serial=s) for s in self._serials]


def test_shell_sends_the_command_as_given_and_returns_its_output() -> None:
    device = StubDevice("[ro.product.model]: [Pixel 7]")
    client = StubClient(device)
    transport = AdbTransport("SER1", client=client)
    assert transport.shell("cd '/a b' && ls", timeout=5) == "[ro.product.model]: [Pixel 7]"
    assert client.asked == "SER1" and device.calls == [("cd '/a b' && ls", False, 5)]


@pytest.mark.parametrize(
    "error",
    [adbutils.AdbError("device offline"), adbutils.AdbError("device 'SER1' not found"), adbutils.AdbTimeout("x"),
     ConnectionResetError("reset"), EOFError("Expected 4 bytes, got 0")],
)  # fmt: skip
def test_adb_failures_become_device_errors_that_say_what_to_do(error: Exception) -> None:
    transport = AdbTransport("SER1", client=StubClient(StubDevice(error)))
    with pytest.raises(DeviceError, match=r"adb:SER1 is not reachable \(") as err:
        transport.shell("getprop")
    assert str(error) in str(err.value)
    assert "adb devices" in str(err.value) and "accept the USB-debugging prompt" in str(err.value)
    assert "replug" in str(err.value)


def test_stream_yields_each_line_as_it_arrives() -> None:
    ours, phone = socket.socketpair()
    device = StubDevice(StubConnection(ours))
    stream = AdbTransport("SER1", client=StubClient(device)).shell_stream("./runner")
    phone.sendall(b'{"event": "start"}\n')
    assert next(stream) == '{"event": "start"}'  # before the rest was even written
    phone.sendall(b'{"event": "sample", "us": 1.5}\r\nlast line')
    phone.close()
    assert list(stream) == ['{"event": "sample", "us": 1.5}', "last line"]
    assert device.calls == [("./runner", True, None)]


def test_a_silent_stream_times_out_as_a_lost_phone() -> None:
    ours, phone = socket.socketpair()
    transport = AdbTransport("SER1", client=StubClient(StubDevice(StubConnection(ours))), idle_timeout=0.05)
    with pytest.raises(DeviceError, match="adb:SER1 is not reachable"):
        list(transport.shell_stream("./runner"))
    phone.close()


def test_push_goes_through_adb_sync_and_maps_failures(tmp_path: Path) -> None:
    device = StubDevice()
    AdbTransport("SER1", client=StubClient(device)).push(tmp_path / "runner", "/data/local/tmp/ac/x/runner")
    assert device.pushed == [(tmp_path / "runner", "/data/local/tmp/ac/x/runner")]
    broken = AdbTransport("SER1", client=StubClient(StubDevice(push_error=adbutils.AdbError("FAIL"))))
    with pytest.raises(DeviceError, match="not reachable"):
        broken.push(tmp_path / "runner", "/x")


def test_list_serials_and_an_unreachable_adb_server() -> None:
    assert list_serials(StubClient(serials=["A1", "10.0.0.5:5555"])) == ["A1", "10.0.0.5:5555"]
    down = StubClient(error=AdbConnectionError("connect to adb server failed: [Errno 111]"))
    with pytest.raises(DeviceError, match="cannot reach the adb server") as err:
        list_serials(down)
    assert "adb start-server" in str(err.value) and "python -m adbutils -l" in str(err.value)
