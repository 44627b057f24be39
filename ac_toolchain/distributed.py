"""torch.distributed helpers: the process group of a ``torchrun`` launch, rank 0 as the one writer, collectives.

Without torchrun's environment (``RANK``, ``WORLD_SIZE``) nothing here starts a process group and every helper
is the single-process identity: :func:`active` is false, :func:`is_main` true, reductions return their input.
Under torchrun every rank runs the same program; the backend is gloo on CPU and nccl on CUDA, and each CUDA
rank uses its ``LOCAL_RANK`` device (docs/distributed.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ac_toolchain.errors import ACError
from ac_toolchain.runs import CHECKPOINT_RE

T = TypeVar("T")
_local = {"alone": False}  # True inside alone(): rank 0's solo work, no collectives


class DistributedError(ACError):
    """The ranks of a torchrun launch did not meet (a rank died or hung) or cannot start."""


def launched() -> bool:
    """True when torchrun (or another torch.distributed launcher) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_id() -> str | None:
    """The id of this torchrun launch, the same on every rank and in every restart of the group: torchrun's run
    id (a fresh uuid under ``--standalone``, which ``ac compress --nproc-per-node`` uses; the job's ``--rdzv-id``
    on more than one node; ``none`` when neither is given). None without a launch."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "none") if launched() else None


def restarts() -> int:
    """How often torchrun has restarted the group so far (``--max-restarts``): 0 on the first attempt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) if launched() else 0


def earlier_run(runs_dir: Path, same: Callable[[Path], bool]) -> Path | None:
    """After torchrun restarted the group: the run directory this launch's earlier attempt wrote, to resume.

    That is the directory in ``runs_dir`` (``same(run_dir)`` true: the same config) holding a checkpoint that
    :func:`~ac_toolchain.train.fit` stamped with this :func:`launch_id`; under the non-unique id ``none``, the
    one of them with the newest checkpoint. None on the first attempt, without a launch, or when the earlier
    attempt stopped before its first checkpoint (there is nothing to resume then). Every rank looks on its own,
    before the group is up: the earlier attempt's ranks have all stopped, so they all see the same files, and a
    checkpoint being written when a rank was killed is a hidden temporary file (``runs.atomic_save``), never
    one of these.
    """
    me = launch_id()
    if me is None or restarts() == 0 or not Path(runs_dir).is_dir():
        return None
    found: list[tuple[float, Path]] = []
    for run_dir in Path(runs_dir).iterdir():
        if not (run_dir / "config.toml").is_file() or (run_dir / "report.json").is_file() or not same(run_dir):
            continue
        for ckpt in (run_dir / "checkpoints").glob("*.pt"):
            if CHECKPOINT_RE.match(ckpt.name) and _stamp(ckpt) == me:
                found.append((ckpt.stat().st_mtime, run_dir))
    return max(found)[1] if found else None


def _stamp(checkpoint: Path) -> str | None:
    """The launch id in a checkpoint (memory-mapped: the weights are not read)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours to judge here: resuming reads it again and says what is wrong
        return None
    return state.get("launch") if isinstance(state, dict) else None


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
    timeout = timedelta(seconds=timeout_s)
    try:
        store = _restart_store(timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)  # fmt: skip
    except Exception as exc:
        raise DistributedError(f"cannot join the torchrun process group ({backend}): {_first_line(exc)}") from None
    return device


def _restart_store(timeout: timedelta) -> dist.Store | None:
    """After a restart on one node: torchrun's store under a prefix of this attempt's own, else None (torch's
    ``env://`` rendezvous).

    torchrun's agent hosts the store the workers meet in (``TORCHELASTIC_USE_AGENT_STORE``) and keeps it across
    restarts with the previous attempt's keys in it, so a restarted rank can read a dead rank's address and hang
    or fail connecting (pytorch/pytorch#135712). On one node the restart count is the same for every rank and
    makes a fresh namespace; on more than one node it is not (each node's agent counts its own), so there the
    launch sets ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` instead (docs/distributed.md)."""
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not shared or restarts() == 0 or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return None
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=False, timeout=timeout)  # fmt: skip
    return dist.PrefixStore(f"/ac_toolchain/attempt_{restarts()}", agent)


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


def mean_running_stats(bns: list[nn.modules.batchnorm._BatchNorm], count: int) -> None:
    """Every rank's BatchNorm running statistics, each a mean over its own ``count`` batches, replaced by the mean
    over all the ranks' batches (the same on every rank)."""
    if not active():
        return
    (total,) = sum_all(count)
    for m in bns:
        if m.running_mean is None or m.running_var is None or total == 0:
            continue
        for stat in (m.running_mean, m.running_var):
            weighted = stat * count
            dist.all_reduce(weighted)
            stat.copy_(weighted / total)
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(int(total))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the ranks), or
    the model itself without a process group."""
    if not active():
        return model
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@contextmanager
def sync_batchnorm(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside: every BatchNorm of ``model`` is a :class:`~torch.nn.SyncBatchNorm` (statistics over all ranks'
    images of a batch) sharing the BatchNorm's parameters and statistics; after it the BatchNorms are back, with
    what training did to them, so the pruning, export and compile stages see plain BatchNorm again.

    Only under a process group (a single process has nothing to synchronise); torch's SyncBatchNorm trains on
    GPUs only (``train.sync_bn`` on CPU is refused before any work: ``train.check_device_options``)."""
    swaps = []
    if enabled and active():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                    setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
                    swaps.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swaps:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
