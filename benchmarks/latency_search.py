"""The latency objective against the params objective, on the main job: same model, data, dense weights and
schedule, one target each; measured on qemu-arm64.

    python -m benchmarks.latency_search [--model resnet18] [--run latency:6] [--run params:10] [--preset P]

Each ``--run OBJECTIVE:X`` is ``ac compress MODEL --target arm64 --OBJECTIVE-x X`` (the first run trains the
dense model, the others start from its ``dense.pt``); a run already saved under
benchmarks/results/latency_search-<model>/ is reused, so runs can be added one at a time. Writes
benchmarks/results/latency_search-<model>.{json,md,png}: per run the accuracy, params / MACs ratios, the
predicted and the measured qemu-arm64 instruction speed-up, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import ac_toolchain as ac

RESULTS = Path(__file__).parent / "results"
KEYS = {"latency": "search.latency_x", "params": "search.params_x", "flops": "search.flops_x"}


def _saved(model: str) -> Path:
    return RESULTS / f"latency_search-{model}"


def run_one(model: str, objective: str, x: float, preset: str | None, runs: Path) -> dict[str, Any]:
    dense = next(iter(sorted(runs.glob("*/dense.pt"))), None)
    overrides: dict[str, Any] = {"run.target": "arm64", "run.bench": "qemu-arm64", KEYS[objective]: x,
                                 "run.runs_dir": str(runs)}  # fmt: skip
    if dense is not None:
        overrides["model.checkpoint"] = str(dense)
    start = time.perf_counter()
    report = asdict(ac.compress(model, preset, overrides))
    bench = report["bench"]["qemu-arm64"]
    return {"objective": objective, "target": x, "dense_accuracy": report["dense"]["accuracy"],
            "accuracy": report["compressed"]["accuracy"], "drop_points": report["accuracy_drop_points"],
            "params_x": report["ratios"]["params"], "flops_x": report["ratios"]["flops"],
            "measured_speedup": bench["speedup"],
            "predicted_speedup": (report.get("latency") or {}).get("predicted_speedup"),
            "seconds": round(time.perf_counter() - start, 1), "dense_from": str(dense) if dense else "trained",
            "rates": report["rates"]}  # fmt: skip


def markdown(model: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# {model}: latency objective vs params objective (qemu-arm64 instructions)", "",
             f"`ac compress {model} --target arm64 --<objective>-x X` per row, one dense model; "
             "`python -m benchmarks.latency_search` made this table.", "",
             "| objective | target | top-1 | vs dense | params ÷ | MACs ÷ | predicted speed-up | measured speed-up "
             "| wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        predicted = f"{r['predicted_speedup']}×" if r["predicted_speedup"] else "—"
        lines.append(f"| {r['objective']} | {r['target']}× | {r['accuracy']:.2%} | {-r['drop_points']:+.2f} | "
                     f"{r['params_x']}× | {r['flops_x']}× | {predicted} | {r['measured_speedup']}× | "
                     f"{r['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(model: str, rows: list[dict[str, Any]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for objective in sorted({r["objective"] for r in rows}):
        mine = [r for r in rows if r["objective"] == objective]
        ax.scatter([r["measured_speedup"] for r in mine], [100 * r["accuracy"] for r in mine], label=objective, s=40)
        for r in mine:
            ax.annotate(f"{r['target']}×", (r["measured_speedup"], 100 * r["accuracy"]), fontsize=8)
    ax.axhline(100 * rows[0]["dense_accuracy"], color="grey", linestyle="--", linewidth=0.8, label="dense")
    ax.set_xlabel("measured qemu-arm64 instruction speed-up")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{model}: accuracy at measured speed-up")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--run", action="append", default=[], help="OBJECTIVE:X (latency, params or flops)")
    parser.add_argument("--preset", default=None, help="recipe preset (default: the machine's)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/latency_search"))
    args = parser.parse_args(argv)
    saved = _saved(args.model)
    saved.mkdir(parents=True, exist_ok=True)
    for item in args.run or ["latency:6", "params:10"]:
        objective, x = item.split(":")
        path = saved / f"{objective}-{x}.json"
        if not path.is_file():
            path.write_text(json.dumps(run_one(args.model, objective, float(x), args.preset, args.runs_dir),
                                       indent=2) + "\n")  # fmt: skip
    rows = sorted((json.loads(p.read_text()) for p in saved.glob("*.json")),
                  key=lambda r: (r["objective"], r["target"]))  # fmt: skip
    (RESULTS / f"latency_search-{args.model}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"latency_search-{args.model}.md").write_text(markdown(args.model, rows))
    plot(args.model, rows, RESULTS / f"latency_search-{args.model}.png")
    print(markdown(args.model, rows))


if __name__ == "__main__":
    main()
