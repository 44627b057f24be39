"""Latency tables vs measured whole models: is the search's latency cost right?

    python -m benchmarks.latency_model [--models resnet18,vgg16] [--devices qemu-arm64,host] [--specs 8]

Per model (CIFAR layout, 3x32x32, 10 classes, random weights: neither counts nor times depend on the values)
and device: build the latency tables (ac_toolchain/latency_tables.py; timed, then built again to show the cache hit),
draw ``--specs`` random specs (every unit a rate in [0, 0.9] and a scheme among filter / column /
filter+column), predict each one's cost from the tables, then prune, compact, compile and measure the whole
model on the device exactly as ``ac bench`` does. Writes benchmarks/results/latency_model.{json,md,png}: per
spec predicted, measured and the error; per model and device the median and largest absolute error.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import ac_toolchain as ac
from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.graph import trace
from ac_toolchain.latency_tables import CellCache, latency_model, measured_total
from ac_toolchain.platform import runner_target
from ac_toolchain.prune.schemes import apply_masks
from ac_toolchain.scheme_registry import SEARCH_SCHEMES
from ac_toolchain.search.space import Space, spec_of
from android_bench.devices import get_device

RESULTS = Path(__file__).parent / "results"


def _model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ac.build_model(name, num_classes=10, in_channels=3, input_size=(32, 32)).eval(), torch.randn(1, 3, 32, 32)


def one(model_name: str, device_name: str, n_specs: int, seed: int, work: Path, threads: int) -> dict[str, Any]:
    model, x = _model(model_name)
    timings = {}
    for attempt in ("first", "cached"):
        start = time.perf_counter()
        tables = latency_model(model, x, device_name, work, threads)
        timings[attempt] = round(time.perf_counter() - start, 1)
    device = get_device(device_name)
    target = runner_target(device)
    cache = CellCache(device, target, threads)
    space = Space(trace(model, x), "latency", called_modules(model, x), latency=tables)
    rng = random.Random(seed)
    rows = []
    for i in range(n_specs):
        spec = spec_of(space.units, [rng.uniform(0.0, 0.9) for _ in space.units],
                       [rng.choice(SEARCH_SCHEMES) for _ in space.units])  # fmt: skip
        predicted = space.cost(spec)
        pruned, _ = _model(model_name)
        apply_masks(pruned, space.masks(spec))
        measured = measured_total(device, pruned, x, target, work / f"spec{i}", threads)
        rows.append({"spec": i, "params": predicted.params, "flops": predicted.flops,
                     "predicted": round(predicted.latency, 3), "measured": measured,
                     "error": round((predicted.latency - measured) / measured, 4),
                     "predicted_speedup": round(space.dense.latency / predicted.latency, 3),
                     "measured_speedup": round(tables.total / measured, 3)})  # fmt: skip
        print(f"{model_name} {device_name} spec {i}: predicted {predicted.latency:,.0f} measured {measured:,.0f} "
              f"({rows[-1]['error']:+.1%})", flush=True)  # fmt: skip
    device.close()
    errors = [abs(r["error"]) for r in rows]
    return {"model": model_name, "device": device_name, "threads": threads, "metric": tables.metric,
            "unit": tables.unit,
            "cells": sum(len(t.values) for t in tables.layers.values()), "convs": len(tables.layers),
            "table_seconds": timings, "cache_file": str(cache.path), "rest": tables.rest, "per_mac": tables.per_mac,
            "dense_measured": tables.total, "median_abs_error": round(statistics.median(errors), 4),
            "max_abs_error": round(max(errors), 4), "specs": rows}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Latency tables: predicted vs measured whole-model cost", "",
        f"`{doc['command']}` — random-weight CIFAR-layout models, {doc['specs']} random specs each (every unit a "
        "rate in [0, 0.9] and a scheme), each pruned, compacted, compiled and measured as `ac bench` does.", "",
        "| model | device | metric | convs / cells | table build (first / cached) s | median abs error | "
        "max abs error |",
        "|---|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in doc["results"]:
        t = r["table_seconds"]
        lines.append(f"| {r['model']} | {r['device']} | {r['metric']} | {r['convs']} / {r['cells']:,} | "
                     f"{t['first']} / {t['cached']} | {r['median_abs_error']:.1%} | "
                     f"{r['max_abs_error']:.1%} |")  # fmt: skip
    lines += ["", "| model | device | spec | predicted | measured | error | predicted speed-up | measured speed-up |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in doc["results"]:
        for s in r["specs"]:
            lines.append(f"| {r['model']} | {r['device']} | {s['spec']} | {s['predicted']:,.0f} | "
                         f"{s['measured']:,.0f} | {s['error']:+.1%} | {s['predicted_speedup']}× | "
                         f"{s['measured_speedup']}× |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], out: Path) -> None:
    devices = sorted({r["device"] for r in doc["results"]})
    fig, axes = plt.subplots(1, len(devices), figsize=(5 * len(devices), 4.5), squeeze=False)
    for ax, device in zip(axes[0], devices, strict=True):
        for r in (r for r in doc["results"] if r["device"] == device):
            ax.scatter([s["measured_speedup"] for s in r["specs"]], [s["predicted_speedup"] for s in r["specs"]],
                       label=f"{r['model']} (median error {r['median_abs_error']:.1%})")  # fmt: skip
        top = max(max(s["measured_speedup"], s["predicted_speedup"]) for r in doc["results"] for s in r["specs"])
        ax.plot([1, top], [1, top], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(f"measured speed-up on {device}")
        ax.set_ylabel("predicted by the latency tables")
        ax.set_title(device)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg16")
    parser.add_argument("--devices", default="qemu-arm64,host")
    parser.add_argument("--specs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="host threads (0: every core, as ac bench)")
    parser.add_argument("--name", default="latency_model", help="result file stem in benchmarks/results/")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in args.devices.split(","):
            for model in args.models.split(","):
                results.append(one(model, device, args.specs, args.seed, Path(tmp) / f"{model}-{device}", args.threads))
    command = "python -m benchmarks.latency_model " + " ".join(argv if argv is not None else [])
    doc = {"command": command.strip(), "specs": args.specs, "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(doc))
    plot(doc, RESULTS / f"{args.name}.png")
    print(markdown(doc))


if __name__ == "__main__":
    main()
