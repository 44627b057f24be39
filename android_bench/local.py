"""Run an artifact's runner on this machine, natively or under an emulator, and read its outputs back.

Used to check a compiled artifact against torch (the runner's --input / --save-outputs flags), on the host and
under qemu-user, where no adb round trip is needed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from android_bench.device import BenchSettings
from android_bench.errors import DeviceError
from android_bench.protocol import parse_runner_output, runner_command

ONCE = BenchSettings(warmup=0, runs=1, min_seconds=0.0, threads=1)


def run_runner(artifact: Path, args: Sequence[str], prefix: Sequence[str] = (), timeout: float = 3600) -> str:
    """``[*prefix, ./runner, *args]`` in the artifact folder; its stdout, or a DeviceError with its stderr."""
    if not (artifact / "runner").is_file():
        raise DeviceError(f"{artifact} holds no 'runner'; build it with `ac compile RUN --target android-arm64`")
    cmd = [*prefix, *args]
    try:
        done = subprocess.run(cmd, cwd=artifact, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeviceError(f"cannot run {' '.join(cmd)} in {artifact}: {exc}") from exc
    if done.returncode:
        tail = " | ".join(done.stderr.strip().splitlines()[-6:]) or "nothing on stderr"
        raise DeviceError(f"the runner in {artifact} exited with status {done.returncode}: {tail}")
    return done.stdout


def infer(artifact: Path, inputs: Sequence[np.ndarray], prefix: Sequence[str] = ()) -> list[np.ndarray]:
    """One inference on ``inputs`` (float32, in the manifest's order); the outputs, shaped as the manifest says."""
    outputs = json.loads((artifact / "manifest.json").read_text())["outputs"]
    with tempfile.TemporaryDirectory() as tmp:
        flags: list[str] = []
        for i, x in enumerate(inputs):
            path = Path(tmp) / f"input{i}.bin"
            np.ascontiguousarray(x, "<f4").tofile(path)
            flags += ["--input", str(path)]
        run_runner(artifact, [*runner_command(ONCE), *flags, "--save-outputs", tmp], prefix)
        files = [Path(tmp) / f"output{i}.bin" for i in range(len(outputs))]
        return [np.fromfile(f, o["dtype"]).reshape(o["shape"]) for f, o in zip(files, outputs, strict=True)]


def counted_run(
    artifact: Path, runs: int, seed: int, prefix: Callable[[Path], Sequence[str]], read: Callable[[Path], int]
) -> int:
    """``runs`` inferences (one thread, no warm-up) under a counting tool ``prefix(out)`` that writes its count to
    the file ``out``; returns ``read(out)``."""
    settings = BenchSettings(warmup=0, runs=runs, min_seconds=0.0, threads=1, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "count.out"
        stdout = run_runner(artifact, runner_command(settings), prefix(out))
        parse_runner_output(stdout.splitlines())  # the runner finished every run
        return read(out)
