"""Run directories, atomic checkpoints and resume.

A run directory holds everything one run makes (see docs/architecture.md). Checkpoints are written to a temporary file
in the same folder, fsynced, then renamed, so a crash leaves either the old file or the new one, never half
of one. Everything is loaded with ``weights_only=True``: a checkpoint can hold tensors, numbers, strings,
lists and dicts, never code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import tempfile
import time
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from ac_toolchain.errors import CheckpointError

T = TypeVar("T")

# <stage>-<epoch>.pt; a stage name may hold digits and dashes (``admm-r2-0003.pt``: stage admm-r2, epoch 3)
CHECKPOINT_RE = re.compile(r"^(?P<stage>[a-z][a-z0-9-]*?)-(?P<epoch>\d+)\.pt$")


def safe_name(text: str) -> str:
    """``text`` as a file name: every run of characters outside ``[A-Za-z0-9_.-]`` becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def new_run_dir(runs_dir: str | Path, model: str, target: str) -> Path:
    """``runs/<model>-<target>-<YYYYmmdd-HHMMSS>/``; a suffix keeps two runs in one second apart."""
    name = safe_name(Path(model.split(":")[0]).stem if ":" in model else model)
    base = Path(runs_dir) / f"{name}-{target}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    (path / "checkpoints").mkdir(parents=True)
    return path


def _atomic(path: Path, write: Any) -> None:
    """``write(fh)`` into a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to ``path`` atomically (see :func:`_atomic`)."""
    _atomic(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: Path) -> None:
    """Write a text file atomically: readers see the old file or the whole new one."""
    _atomic(path, lambda fh: fh.write(text.encode()))


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write a binary file atomically (see :func:`_atomic`)."""
    _atomic(path, lambda fh: fh.write(data))


def safe_load(path: Path) -> Any:
    """Load a checkpoint or state dict with weights_only=True; a clear error if missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused something: code or foreign objects, not weights
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it holds objects other than tensors, numbers and strings "
            "(not a state dict or AutoCompress checkpoint) — point to a state dict saved with torch.save"
        ) from None
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it is corrupt or not a state dict saved by torch.save — delete it or point to another one"
        ) from None


def save_checkpoint(run_dir: Path, stage: str, epoch: int, state: dict[str, Any]) -> Path:
    """``checkpoints/<stage>-<epoch>.pt``; older checkpoints of the stage are removed once it is safe."""
    path = run_dir / "checkpoints" / f"{stage}-{epoch:04d}.pt"
    named = CHECKPOINT_RE.match(path.name)
    if named is None or named["stage"] != stage:
        raise ValueError(f"stage name {stage!r} cannot be told apart from its epoch in a file name")
    atomic_save({"stage": stage, "epoch": epoch, **state}, path)
    for _, old in _checkpoints(run_dir, stage):
        if old != path:
            old.unlink()
    return path


def _checkpoints(run_dir: Path, stage: str) -> list[tuple[int, Path]]:
    """(epoch, path) of the stage's own checkpoints: ``admm-*.pt`` also matches ``admm-r2-0001.pt``, skipped."""
    found = []
    for p in (run_dir / "checkpoints").glob(f"{stage}-*.pt"):
        m = CHECKPOINT_RE.match(p.name)
        if m and m["stage"] == stage:
            found.append((int(m["epoch"]), p))
    return found


def latest_checkpoint(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """The newest checkpoint of a stage (highest epoch), loaded, or None."""
    found = _checkpoints(run_dir, stage)
    return safe_load(max(found)[1]) if found else None


def load_state_dict(model: torch.nn.Module, path: Path) -> None:
    """Load a state dict (or a checkpoint holding one under 'model') into model, strictly."""
    state = safe_load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"{path} does not match this model: {' '.join(first)[:400]}") from None


def write_record(record: Any, path: Path) -> None:
    """A dataclass as JSON, atomically (the run directory's typed records)."""
    atomic_write_text(json.dumps(dataclasses.asdict(record), indent=2) + "\n", path)


def read_record(cls: type[T], path: Path) -> T:
    """What :func:`write_record` wrote, as ``cls`` again."""
    return from_record(cls, json.loads(path.read_text()))


def from_record(cls: type[T], data: Any) -> T:
    """Rebuild dataclass ``cls`` from what ``dataclasses.asdict`` wrote to JSON: nested dataclasses, their lists
    and dicts, and optional ones. Keys the class does not have are an error (a file from another version);
    missing keys take the field's default."""
    return cast(T, _value(cls, data))


def _value(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return _value(next(a for a in args if a is not type(None)), data)
    if origin is list:
        return [_value(args[0], x) for x in data]
    if origin is dict:
        return {k: _value(args[1], v) for k, v in data.items()}
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = set(data) - names
        if unknown:
            raise CheckpointError(f"{kind.__name__}: unknown keys {sorted(unknown)} (written by another version)")
        return kind(**{k: _value(hints[k], v) for k, v in data.items()})
    return data
