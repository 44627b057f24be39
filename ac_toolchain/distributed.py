"""torch.distributed helpers: the process group of a ``torchrun`` launch, rank 0 as the one writer, collectives.

Without torchrun's environment (``RANK``, ``WORLD_SIZE``) nothing here starts a process group and every helper
is the single-process identity: :func:`active` is false, :func:`is_main` true, reductions return their input.
Under torchrun every rank runs the same program; the backend is gloo on CPU and nccl on CUDA, and each CUDA
rank uses its ``LOCAL_RANK`` device (docs/distributed.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ac_toolchain.errors import ACError

T = TypeVar("T")
_local = {"alone": False}  # True inside alone(): rank 0's solo work, no collectives


class DistributedError(ACError):
    """The ranks of a torchrun launch did not meet (a rank died or hung) or cannot start."""


def launched() -> bool:
    """True when torchrun (or another torch.distributed launcher) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """A process group of more than one rank is up (and this is not rank 0's solo work)."""
    return not _local["alone"] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: torchrun's ``RANK`` until the process group is up, 0 without a launch."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one writer (also the single process)."""
    return rank() == 0


def init(device: torch.device, timeout_s: float) -> torch.device:
    """Join the process group of a torchrun launch (once); returns the device this rank trains on: the
    ``LOCAL_RANK`` GPU on CUDA, else ``device``. Without a launch it returns ``device`` and does nothing."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return _local_device(device) if launched() else device
    if device.type == "cuda":
        device = _local_device(device)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except Exception as exc:
        raise DistributedError(f"cannot join the torchrun process group ({backend}): {_first_line(exc)}") from None
    return device


def _local_device(device: torch.device) -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if device.type == "cuda" else device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def alone() -> Iterator[None]:
    """Rank 0's solo work (export, compile, bench): evaluation inside runs on this rank alone."""
    saved, _local["alone"] = _local["alone"], True
    try:
        yield
    finally:
        _local["alone"] = saved


def barrier(stage: str) -> None:
    """Wait for every rank; a rank that died or hung past the collective timeout is an error naming ``stage``."""
    if not active():
        return
    try:
        dist.barrier()
    except Exception as exc:
        raise DistributedError(f"{stage}: the ranks did not meet at the barrier after it ({_first_line(exc)}); "
                               "another rank failed or hung — its error is above") from None  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _device_of_group() -> torch.device:
    """Collectives of nccl need CUDA tensors; gloo takes CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_all(*values: float) -> tuple[float, ...]:
    """Each value summed over the ranks (float64); the values themselves without a process group."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device_of_group())
    dist.all_reduce(t)
    return tuple(float(v) for v in t.cpu())


def broadcast(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_device_of_group())
    return box[0]


def gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: each rank updated its own on its own batches."""
    if not active():
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the ranks), or
    the model itself without a process group."""
    if not active():
        return model
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
