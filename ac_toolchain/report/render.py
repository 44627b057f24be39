"""Build, write and render a run's report. The Markdown is rendered from the JSON dict, never separately."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from ac_toolchain import __version__
from ac_toolchain.compile import get_target
from ac_toolchain.config import CompressConfig, to_dict

ARTIFACTS = ("config.toml", "dense.pt", "compressed.pt", "dense.onnx", "model.onnx", "report.json", "report.md")
NOT_COMPILED = {"status": "not compiled"}


def _artifacts(run_dir: Path, target: str) -> dict[str, str]:
    names = [n for n in ARTIFACTS if (run_dir / n).exists() or n.startswith("report")]
    names += [target] if (run_dir / target).is_dir() else []
    return {name: str(run_dir / name) for name in names}


def _ratio(dense: int, compressed: int) -> float:
    return round(dense / compressed, 3) if compressed else float("inf")


def build_report(
    run_dir: Path, cfg: CompressConfig, dataset: str, results: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    dense, comp = results["dense"], results["compressed"]
    target = get_target(cfg.run.target)
    return {
        "model": cfg.model.arch,
        "dataset": dataset,
        "target": target.name,
        "dense": dense,
        "compressed": comp,
        "accuracy_drop_points": round(100 * (dense["accuracy"] - comp["accuracy"]), 3),
        "ratios": {k: _ratio(dense[k], comp[k]) for k in ("params", "flops")},
        "method": {"search": cfg.search.method, "scheme": cfg.prune.scheme, "rate": cfg.prune.rate},
        "layers": results.get("layers", []),
        "compact_max_abs_diff": results["compact_max_abs_diff"],
        "onnx_max_abs_diff": results["onnx_max_abs_diff"],
        "compile": {"target": target.name, "tvm_target": target.tvm_target, **results.get("compile", NOT_COMPILED)},
        "bench": results.get("bench", {}),
        "artifacts": _artifacts(run_dir, target.name),
        "timings": timings,
        "config": to_dict(cfg),
        "versions": {
            "autocompress": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _layer_row(x: dict[str, Any]) -> str:
    groups = f"{x['groups_kept']} / {x['groups_total']}" if x["groups_total"] else "—"
    cols = f"{x['columns_kept']} / {x['columns_total']}" if x["columns_total"] else "—"
    return f"| {x['name']} | {x['scheme']} | {x['rate']} | {groups} | {cols} | {x['coupled_to'] or ''} |"


def _bench_lines(benches: dict[str, Any]) -> list[str]:
    """One section per device measured with `ac bench` (report.json's "bench")."""
    lines = []
    for device, b in benches.items():
        check = (b.get("output_check") or {}).get("max_abs_diff")
        lines += [f"## Bench on {device}", "", b["table"], "",
                  f"Speed-up dense → compressed: {b['speedup']}× ({b['metric']})"
                  + (f"; outputs vs torch max abs difference {check:.2e}" if check is not None else "")
                  + f". Every sample: `{b['json']}`.", ""]  # fmt: skip
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    d, c, ratio = r["dense"], r["compressed"], r["ratios"]
    lines = [
        f"# AutoCompress report: {r['model']} on {r['dataset']} → {r['target']}",
        "",
        f"Method: `{r['method']['search']}` search, `{r['method']['scheme']}` scheme, rate {r['method']['rate']}.",
        "",
        "| | top-1 accuracy | params | FLOPs (MACs) |",
        "|---|---:|---:|---:|",
        f"| dense | {d['accuracy']:.2%} | {d['params']:,} | {d['flops']:,} |",
        f"| compressed | {c['accuracy']:.2%} | {c['params']:,} | {c['flops']:,} |",
        f"| ratio | {-r['accuracy_drop_points']:+.2f} points | {ratio['params']}× | {ratio['flops']}× |",
        "",
        f"Compile ({r['target']}): {r['compile']['status']}"
        + (f"; max |TVM - torch| {r['compile']['max_abs_diff']:.2e}" if "max_abs_diff" in r["compile"] else "")
        + ".",
        "",
        f"Compact vs masked model, max abs difference: {r['compact_max_abs_diff']:.2e}; "
        f"ONNX (onnxruntime) vs masked: {r['onnx_max_abs_diff']:.2e}.",
        "",
        "## Layers",
        "",
        "| layer | scheme | rate | filter groups kept | columns kept | coupled to |",
        "|---|---|---:|---:|---:|---|",
        *[_layer_row(x) for x in r["layers"]],
        "",
        *_bench_lines(r.get("bench", {})),
        "## Timings (s)",
        "",
        *[f"- {stage}: {sec:.1f}" for stage, sec in r["timings"].items()],
        "",
        "## Artifacts",
        "",
        *[f"- {name}: `{path}`" for name, path in r["artifacts"].items()],
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_report(
    run_dir: Path, cfg: CompressConfig, dataset: str, results: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    report = build_report(run_dir, cfg, dataset, results, timings)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "report.md").write_text(render_markdown(report))
    return report
