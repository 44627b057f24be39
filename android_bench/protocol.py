"""The contract between the host and the runner: its command line, its artifact folder, its JSON-lines output.

Every device speaks this protocol (android_bench/runner/README.md has the runner's side), so the parsing lives
here once: host, qemu and adb devices only differ in how the lines reach us.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from android_bench.device import BenchSettings
from android_bench.errors import DeviceError


def runner_command(settings: BenchSettings, manifest: str = "manifest.json") -> list[str]:
    """argv of the runner, relative to its artifact folder (identical on every device)."""
    return [
        "./runner",
        *("--manifest", manifest),
        *("--warmup", str(settings.warmup)),
        *("--runs", str(settings.runs)),
        *("--min-seconds", repr(float(settings.min_seconds))),
        *("--threads", str(settings.threads)),
        *("--seed", str(settings.seed)),
    ]


def table_command(settings: BenchSettings, cells: str = "cells.txt") -> list[str]:
    """argv of the runner's ``--conv-table`` mode (the kernel alone on many shapes), relative to its folder."""
    return ["./runner", "--conv-table", cells, *("--warmup", str(settings.warmup)), *("--runs", str(settings.runs)),
            *("--threads", str(settings.threads)), *("--seed", str(settings.seed))]  # fmt: skip


def parse_table_output(lines: Iterable[str]) -> list[list[float]]:
    """The timed samples (us) of every cell of a ``--conv-table`` run, in cell order."""
    cells: list[list[float]] = []
    done = None
    for line in lines:
        event = _event(line)
        if event.get("event") == "cell":
            cells.append([float(v) for v in event.get("samples_us", [])])
        elif event.get("event") == "done":
            done = event
    if done is None or done.get("cells") != len(cells):
        raise DeviceError(f"the conv-table runner stopped early after {len(cells)} cell(s) (crashed or killed)")
    return cells


def parse_runner_output(lines: Iterable[str], on_sample: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Read the runner's events; returns {"start": {...}, "samples_us": [...], "done": {...}}.

    Consumes every line (so a transport can see what follows the runner, e.g. an exit-status marker) and calls
    `on_sample(us)` as each sample arrives, so a caller keeps the samples even when this raises. Lines that are
    not JSON objects (log noise) are skipped; unknown events are skipped so the runner can add some.
    """
    start: dict[str, Any] = {}
    done: dict[str, Any] | None = None
    samples: list[float] = []
    for line in lines:
        event = _event(line)
        kind = event.get("event")
        if kind == "start":
            start = event
        elif kind == "sample":
            samples.append(_sample_us(event, line))
            if on_sample is not None:
                on_sample(samples[-1])
        elif kind == "done":
            done = event
    if done is None:
        raise DeviceError(
            f"the runner stopped early: no 'done' event after {len(samples)} sample(s) "
            f"(it crashed, was killed, or its output was cut off)"
        )
    if done.get("runs", len(samples)) != len(samples):
        raise DeviceError(f"the runner reported {done['runs']} runs but printed {len(samples)} samples")
    return {"start": start, "samples_us": samples, "done": done}


def _event(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _sample_us(event: dict[str, Any], line: str) -> float:
    us = event.get("us")
    if isinstance(us, bool) or not isinstance(us, (int, float)):
        raise DeviceError(f"malformed sample event from the runner (no number in 'us'): {line.strip()[:200]}")
    return float(us)


def artifact_hashes(artifact: Path) -> dict[str, str]:
    """sha256 of every file in an artifact folder, keyed by its POSIX path relative to the folder."""
    if not (artifact / "runner").is_file():
        raise DeviceError(f"{artifact} holds no 'runner'; build the artifact first (`ac compile`)")
    files = sorted(p for p in artifact.rglob("*") if p.is_file())
    return {p.relative_to(artifact).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def artifact_digest(hashes: dict[str, str]) -> str:
    """16 hex digits naming an artifact by the names and contents of all its files."""
    h = hashlib.sha256()
    for name, digest in sorted(hashes.items()):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()[:16]
