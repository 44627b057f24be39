"""Build a model's latency tables on a bench device (``ac bench RUN --profile-layers``, and the search's latency
objective): every conv's grid of cells (:mod:`ac_toolchain.cost.latency_model`) measured on the kernel itself, and
the rest of the model measured once.

The cells run in a *table runner*: the device's static runner core linked with the compact kernel exactly as a
compiled model links it (same objects, same thread pool), no model, started with ``--conv-table`` on a file of
shapes (android_bench/runner/README.md). One runner process measures a whole conv's grid: the host times each
cell (median of its timed calls), qemu-arm64 counts the guest instructions between marks around each call. No
TVM build per cell: one link per kernel version, two model builds for the rest.

Cells are cached in ``$AC_CACHE_DIR/latency/`` (default ``~/.cache/autocompress``), one JSON file per device
fingerprint, metric, thread count and kernel source hash: a second model with the same conv shapes measures
nothing, and an edited kernel starts a new file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain import native
from ac_toolchain.bench_run import build_artifact
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile.lowering import kernel_objects
from ac_toolchain.compile.targets import Target
from ac_toolchain.context import build, example_input, load_splits
from ac_toolchain.cost.analytic import called_modules, masks_cost, structure_cost
from ac_toolchain.cost.latency_model import Cell, ConvGeometry, LatencyModel, LayerTable, cells, conv_geometries
from ac_toolchain.errors import CheckpointError, ConfigError
from ac_toolchain.export import export_onnx
from ac_toolchain.graph import trace
from ac_toolchain.platform import runner_target
from ac_toolchain.prune.schemes import prune
from ac_toolchain.runs import atomic_write_text, load_state_dict, safe_name
from ac_toolchain.scheme_registry import FILTER
from android_bench.bench import METRICS
from android_bench.device import BenchSettings, Device
from android_bench.devices import get_device
from android_bench.lock import DeviceLock

TABLE_SETTINGS = BenchSettings(warmup=2, runs=15, min_seconds=0.0)  # per cell (qemu: one warm-up, one counted call)
TOTAL_SETTINGS = BenchSettings(warmup=3, runs=20, min_seconds=0.5)  # the dense model, for the rest


# ---- the table runner and the cache
def kernel_digest(target: Target) -> str:
    """Hash of what decides a cell's cost besides the device: the kernel and runner sources and the target's
    kernel flags."""
    return native.source_digest(target.name, *(target.kernel_flags or ()), dirs=(native.KERNELS, native.RUNNER))


def cell_cache_dir() -> Path:
    """Where measured cells are kept across runs (one JSON per device, metric, threads and kernel version)."""
    return native.cache_dir() / "latency"


def table_runner(target: Target) -> Path:
    """A folder holding ``runner``: the target's static runner core and compact kernel, no model (cached)."""
    out = native.cache_dir() / "latency-runners" / f"{target.name}-{kernel_digest(target)}"
    if not (out / "runner").is_file():
        out.mkdir(parents=True, exist_ok=True)
        native.link_runner(kernel_objects(target), target.native, out / "runner.tmp")
        (out / "runner.tmp").rename(out / "runner")
    return out


class CellCache:
    """Measured cells of one device and kernel version: ``{"<geometry>|f,c,k": value}`` in one JSON file."""

    def __init__(self, device: Device, target: Target, threads: int) -> None:
        identity = {"device": device.name, "fingerprint": device.fingerprint(), "metric": device.metric,
                    "threads": threads, "kernel": kernel_digest(target)}  # fmt: skip
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path = cell_cache_dir() / f"{safe_name(device.name)}-{digest}.json"
        self.identity, self.threads = identity, threads
        stored = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.values: dict[str, float] = stored.get("cells", {})
        self.rests: dict[str, dict[str, float]] = stored.get("rest", {})
        self.hits = self.misses = 0

    @staticmethod
    def key(geo: ConvGeometry, cell: Cell) -> str:
        return f"{geo.key()}|{','.join(map(str, cell))}"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**self.identity, "cells": self.values, "rest": self.rests}, indent=1)
        atomic_write_text(text + "\n", self.path)


def _measure_layer(device: Device, runner: Path, geo: ConvGeometry, todo: list[Cell], threads: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.txt"
        path.write_text("".join(geo.cell_line(*cell) + "\n" for cell in todo))
        return device.profile_cells(runner, path, replace(TABLE_SETTINGS, threads=threads))


def layer_tables(device: Device, geos: dict[str, ConvGeometry], cache: CellCache, runner: Path
                 ) -> dict[str, LayerTable]:  # fmt: skip
    """The table of every conv: cached cells reused, the others measured, one runner process per conv shape
    (in parallel on a counting device, whose counts do not depend on what else runs; one at a time on a timed
    one)."""
    todo: dict[ConvGeometry, list[Cell]] = {}
    for geo in geos.values():
        grid = list(dict.fromkeys(cells(geo)))
        missing = [c for c in grid if CellCache.key(geo, c) not in cache.values]
        cache.hits += len(grid) - len(missing)
        if missing and geo not in todo:
            todo[geo] = missing
            cache.misses += len(missing)
    workers = (os.cpu_count() or 1) if device.metric == "instructions" else 1
    with Progress(transient=True) as progress, ThreadPoolExecutor(workers) as pool:
        task = progress.add_task(f"latency tables on {device.name}", total=len(todo))
        jobs = {
            pool.submit(_measure_layer, device, runner, geo, missing, cache.threads): geo
            for geo, missing in todo.items()
        }
        for job in as_completed(jobs):
            geo = jobs[job]
            cache.values.update({CellCache.key(geo, c): v for c, v in zip(todo[geo], job.result(), strict=True)})
            cache.save()  # what was measured is kept, whatever happens to the next conv
            progress.advance(task)
    return {name: LayerTable(geo, {c: cache.values[CellCache.key(geo, c)] for c in cells(geo)})
            for name, geo in geos.items()}  # fmt: skip


REST_PROBE = 0.5  # the rest's second model: every layer's filters pruned at this rate


def measured_total(device: Device, model: nn.Module, example: torch.Tensor, target: Target, out: Path,
                   threads: int = 0) -> float:  # fmt: skip
    """One model's whole cost on the device, compacted and built as the compile stage builds it: instructions per
    inference, or the fastest inference in us (as the host's cells are the fastest call)."""
    x = example[:1]
    onnx_path = export_onnx(expand_columns(compact(model.eval(), x).eval()), x, out.with_suffix(".onnx"))
    measured = device.measure(build_artifact(onnx_path, target, out), replace(TOTAL_SETTINGS, threads=threads))
    return float(measured.get("instructions") or min(measured["samples_us"]))


def _convs_and_macs(model: nn.Module, example: torch.Tensor, tables: dict[str, LayerTable]) -> tuple[float, float]:
    """(the convs' predicted cost, the MACs of every layer without a table) of the model's zero pattern."""
    graph, used = trace(model, example[:1]), called_modules(model, example[:1])
    convs = LatencyModel("", "", "", {}, tables, rest=0.0, per_mac=0.0, total=0.0)
    conv_cost = masks_cost(graph, {}, used, convs).latency
    return conv_cost, masks_cost(graph, {}, used, replace(convs, per_mac=1.0)).latency - conv_cost


def _rest(device: Device, model: nn.Module, example: torch.Tensor, target: Target, tables: dict[str, LayerTable],
          work: Path, threads: int) -> dict[str, float]:  # fmt: skip
    """What the tables leave out, ``rest + per_mac * MACs of the layers without a table`` (TVM runs those: the
    classifier), fitted to two measured models: the dense one and one with every layer's filters pruned at
    :data:`REST_PROBE`."""
    probe = copy.deepcopy(model).eval()
    prune(probe, example[:1], REST_PROBE, FILTER)
    points = []
    for name, m in (("dense", model), ("probe", probe)):
        total = measured_total(device, m, example, target, work / name, threads)
        convs, macs = _convs_and_macs(m, example, tables)
        points.append((total - convs, macs, total))
    (rest_d, macs_d, total_d), (rest_p, macs_p, _) = points
    per_mac = max(0.0, (rest_d - rest_p) / (macs_d - macs_p)) if macs_d != macs_p else 0.0
    return {"rest": rest_d - per_mac * macs_d, "per_mac": per_mac, "total": total_d}


def _rest_key(model: nn.Module, example: torch.Tensor) -> str:
    """The dense model's architecture and input shape (its module tree, which holds every layer's shape)."""
    return hashlib.sha256(f"{model}|{tuple(example[:1].shape)}".encode()).hexdigest()[:16]


def check_profilable(device_name: str) -> None:
    """A DeviceError now, before any long work, when the device is missing or cannot build latency tables."""
    device = get_device(device_name)
    try:
        if not device.profiles:
            device.profile_cells(Path(), Path(), TABLE_SETTINGS)  # raises the device's own explanation
    finally:
        device.close()


def latency_model(model: nn.Module, example: torch.Tensor, device_name: str, work: Path,
                  threads: int = 0) -> LatencyModel:  # fmt: skip
    """Measure (or read from the cache) the latency tables of ``model`` on ``device_name``; ``work`` holds the
    two model builds of the rest. ``threads``: as ``ac bench --threads`` (0: the device's default; qemu counts
    one thread)."""
    geos = conv_geometries(model, example)
    if not geos:
        raise ConfigError("the latency objective needs a model with convolutions; this one has none")
    device = get_device(device_name)
    target = runner_target(device)
    with DeviceLock(device.name):
        try:
            cache = CellCache(device, target, threads)
            tables = layer_tables(device, geos, cache, table_runner(target))
            key = _rest_key(model, example)
            if not isinstance(cache.rests.get(key), dict):  # absent, or from an older format
                cache.rests[key] = _rest(device, model, example, target, tables, work, threads)
                cache.save()
        finally:
            device.close()
    return LatencyModel(device.name, device.metric, METRICS[device.metric].unit, device.fingerprint(), tables,
                        **cache.rests[key])  # fmt: skip


def write_model(model: LatencyModel, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(model.to_json(), indent=1) + "\n", path)
    return path


def read_model(path: Path) -> LatencyModel:
    try:
        return LatencyModel.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a latency table ({exc}); delete it and run again to re-measure") from exc


def profile_run(run_dir: Path, device_name: str) -> dict[str, Any]:
    """``ac bench RUN --profile-layers``: the tables of a run's model on a device, written to
    ``<run>/latency/<device>.json``; with the compressed model's predicted cost and speed-up when it exists."""
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.toml); give the folder `ac compress` made")
    cfg = cfgmod.load(run_dir / "config.toml")
    model, x = build(cfg, load_splits(cfg).num_classes), example_input(cfg)
    with tempfile.TemporaryDirectory() as work:
        tables = latency_model(model, x, device_name, Path(work))
    path = write_model(tables, run_dir / "latency" / f"{safe_name(tables.device)}.json")
    graph, used = trace(model, x), called_modules(model, x)
    dense = structure_cost(graph, (), {}, used, tables).latency
    result: dict[str, Any] = {"tables": str(path), "device": tables.device, "metric": tables.metric,
                              "unit": tables.unit, "dense_predicted": dense, "dense_measured": tables.total,
                              "layers": [{"layer": name, **asdict(t.geometry), "cells": len(t.values),
                                          "dense": t.dense()} for name, t in tables.layers.items()]}  # fmt: skip
    if (run_dir / "compressed.pt").is_file():
        load_state_dict(model, run_dir / "compressed.pt")
        compressed = masks_cost(trace(model, x), {}, used, tables).latency
        result.update(compressed_predicted=compressed, predicted_speedup=round(dense / compressed, 3))
    return result
