"""A phone for tests: replays recorded output and keeps an in-memory /data/local/tmp, so AdbDevice runs unchanged.

A fixture folder describes one phone, each file in the format the real command prints (see
tests/android_bench/fixtures/README.md): `getprop.txt`, `cpufreq.txt`, `thermal.txt` and `runner.jsonl`.
A name may instead come as a numbered series (`thermal-0.txt`, `thermal-1.txt`, ...): the n-th read gets the
n-th file and later reads the last one, which is how a phone warms up between two thermal reads.

The fake understands just the shell that AdbDevice writes (simple commands joined by `&&` and `;`) and parses
it the way a POSIX shell would (shlex), so badly quoted paths split here as they would on the phone.
Every command is logged in `commands` for tests to inspect.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from android_bench.adb import CPUFREQ_CMD, GETPROP_CMD, THERMAL_CMD
from android_bench.transport import unreachable

Output = tuple[list[str], int]  # what a fake command prints, and its exit status
RECORDED = {GETPROP_CMD: "getprop.txt", CPUFREQ_CMD: "cpufreq.txt", THERMAL_CMD: "thermal.txt"}


def split_commands(cmd: str) -> list[tuple[str, list[str]]]:
    """'a x && b; c' → [('', [a, x]), ('&&', [b]), (';', [c])]: each simple command with the operator before it."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out: list[tuple[str, list[str]]] = [("", [])]
    for token in lexer:
        if token in (";", "&&"):
            out.append((token, []))
        else:
            out[-1][1].append(token)
    return [(op, argv) for op, argv in out if argv]


class FakeTransport:
    """A recorded phone. `unplug_after=k`: the phone disappears after the k-th streamed line; the stream then
    raises the DeviceError that AdbTransport raises for a lost connection (`unreachable`), as does every later call.
    """

    def __init__(self, fixtures: Path, serial: str = "FAKE0001", unplug_after: int | None = None) -> None:
        self.serial = serial
        self.fixtures = fixtures
        self.unplug_after = unplug_after
        self.unplugged = False
        self.commands: list[str] = []
        self.pushes: list[str] = []  # remote paths, in order
        self.files: dict[str, bytes] = {}  # the phone's filesystem: absolute path → content
        self.executable: set[str] = set()
        self.dirs: set[str] = {"/"}
        self.runs: list[list[str]] = []  # argv of every runner started
        self._reads: Counter[str] = Counter()
        self._cwd = "/"
        self._builtins: dict[str, Callable[[list[str]], Output]] = {
            "mkdir": self._mkdir,
            "cd": self._cd,
            "sha256sum": self._sha256sum,
            "chmod": self._chmod,
            "taskset": self._taskset,
            "./runner": self._runner,
            "rm": self._rm,
            "echo": self._echo,
        }

    # --- Transport -------------------------------------------------------------------------------------------
    def shell(self, cmd: str, timeout: float = 60.0) -> str:
        return "\n".join(self._run(cmd)).rstrip()

    def shell_stream(self, cmd: str) -> Iterator[str]:
        for n, line in enumerate(self._run(cmd), start=1):
            yield line
            if self.unplug_after is not None and n >= self.unplug_after:
                self.unplugged = True
                self._check_plugged()

    def push(self, local: Path, remote: str) -> None:
        self._check_plugged()
        self.files[remote] = local.read_bytes()
        self.dirs.add(posixpath.dirname(remote))  # adbd creates the folders of a pushed file
        self.pushes.append(remote)

    # --- the shell -------------------------------------------------------------------------------------------
    def _check_plugged(self) -> None:
        if self.unplugged:
            raise unreachable(self.serial, f"device '{self.serial}' not found")

    def _run(self, cmd: str) -> Iterator[str]:
        self._check_plugged()
        self.commands.append(cmd)
        if cmd in RECORDED:
            yield from self._recorded(RECORDED[cmd]).splitlines()
            return
        status, self._cwd = 0, "/"
        for op, argv in split_commands(cmd):
            if op == "&&" and status != 0:
                continue
            lines, status = self._call([arg.replace("$?", str(status)) for arg in argv])
            yield from lines

    def _call(self, argv: list[str]) -> Output:
        builtin = self._builtins.get(argv[0])
        if builtin is None:
            return [f"/system/bin/sh: {argv[0]}: inaccessible or not found"], 127
        return builtin(argv[1:])

    def _recorded(self, name: str) -> str:
        stem, ext = name.rsplit(".", 1)
        series = sorted(self.fixtures.glob(f"{stem}-*.{ext}")) or [self.fixtures / name]
        index = min(self._reads[name], len(series) - 1)
        self._reads[name] += 1
        return series[index].read_text()

    def _path(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self._cwd, name))

    def _isdir(self, path: str) -> bool:
        return path in self.dirs or any(f.startswith(path + "/") for f in self.files)

    def _operands(self, args: list[str]) -> list[str]:
        """Absolute paths of a command's operands (options and `--` dropped)."""
        return [self._path(a) for a in args if a != "--" and not a.startswith("-")]

    def _mkdir(self, args: list[str]) -> Output:
        self.dirs.update(self._operands(args))
        return [], 0

    def _cd(self, args: list[str]) -> Output:
        path = self._path(args[0])
        if not self._isdir(path):
            return [f"/system/bin/sh: cd: {path}: No such file or directory"], 2
        self._cwd = path
        return [], 0

    def _sha256sum(self, args: list[str]) -> Output:
        names = [a for a in args if a != "--"]
        sums = {name: self.files.get(self._path(name)) for name in names}
        lines = [
            f"{hashlib.sha256(data).hexdigest()}  {name}" if data is not None else f"sha256sum: {name}: No such file"
            for name, data in sums.items()
        ]
        return lines, int(None in sums.values())

    def _chmod(self, args: list[str]) -> Output:
        mode, *names = args
        missing = [name for name in names if self._path(name) not in self.files]
        if missing:
            return [f"chmod: {missing[0]}: No such file or directory"], 1
        if int(mode, 8) & 0o100:
            self.executable.update(map(self._path, names))
        return [], 0

    def _taskset(self, args: list[str]) -> Output:
        mask, *argv = args
        int(mask, 16)  # a malformed mask is a bug in the caller: let the test see the ValueError
        return self._call(argv)

    def _runner(self, args: list[str]) -> Output:
        if self._path("runner") not in self.executable or self._path("manifest.json") not in self.files:
            return ["/system/bin/sh: ./runner: can't execute: Permission denied"], 126
        self.runs.append(["./runner", *args])
        return self._recorded("runner.jsonl").splitlines(), 0

    def _rm(self, args: list[str]) -> Output:
        for target in self._operands(args):
            self.files = {p: c for p, c in self.files.items() if p != target and not p.startswith(target + "/")}
            self.dirs = {d for d in self.dirs if d != target and not d.startswith(target + "/")} | {"/"}
        return [], 0

    def _echo(self, args: list[str]) -> Output:
        return [" ".join(args)], 0
