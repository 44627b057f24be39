"""Plots of the benchmark results: one PNG beside each JSON in benchmarks/results/.

    python -m benchmarks.plot

structure_latency-*.json: median latency per variant (bars, with min-max whiskers);
layer_latency-*.json: per column-pruned layer, kernel and onnxruntime realised ratios (1.0 = column pruning
turned into speed one for one);
instruction_counts-*.json: instructions per inference per variant (bars).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).parent / "results"


def plot_structure(result: dict, out: Path) -> None:
    stats = result["latency_ms"]
    names = list(stats)
    med = [stats[n]["median"] for n in names]
    low = [stats[n]["median"] - stats[n]["min"] for n in names]
    high = [stats[n]["max"] - stats[n]["median"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, med, xerr=[low, high], color=["#999" if "torch" in n else "#47a" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("ms (median; whiskers min-max)")
    ax.set_title(f"{result['model']} {result['scheme']} {result['rate']}: FLOPs ÷{result['flops_reduction']:.1f}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_layers(result: dict, out: Path) -> None:
    layers = result["layers"]
    xs = range(len(layers))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([x - 0.2 for x in xs], [r["realised_kernel"] for r in layers], 0.4, label="kernels/ compact conv")
    ax.bar([x + 0.2 for x in xs], [r["realised_onnxruntime"] for r in layers], 0.4, label="onnxruntime")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(list(xs), [r["layer"] for r in layers], rotation=70, fontsize=7)
    ax.set_ylabel("speed-up ÷ column reduction")
    ax.set_title(f"{result['model']} {result['scheme']} {result['rate']}: column-pruned layers alone")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_counts(result: dict, out: Path) -> None:
    counts = result["instructions_per_inference"]
    names = list(counts)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh(names, [counts[n] / 1e6 for n in names], color="#47a")
    ax.invert_yaxis()
    ax.set_xlabel("million instructions per inference (callgrind, 1 thread)")
    ax.set_title(f"{result['model']} {result['scheme']} {result['rate']}: FLOPs ÷{result['flops_reduction']:.1f}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


PLOTS = {"structure_latency": plot_structure, "layer_latency": plot_layers, "instruction_counts": plot_counts}


def main() -> None:
    for path in sorted(RESULTS.glob("*.json")):
        plot = PLOTS.get(path.stem.split("-")[0])
        if plot is not None:
            plot(json.loads(path.read_text()), path.with_suffix(".png"))
            print(path.with_suffix(".png"))


if __name__ == "__main__":
    main()
