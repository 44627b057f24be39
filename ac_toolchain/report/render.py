"""Build, write and render a run's report. The Markdown is rendered from the JSON dict, never separately."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from ac_toolchain import __version__
from ac_toolchain.compile import get_target
from ac_toolchain.config import CompressConfig, goals, to_dict
from ac_toolchain.report.plots import plot_admm, plot_pareto, plot_rates, plot_search_trace, read_search_log
from ac_toolchain.runs import atomic_write_text

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
        "method": {
            "search": cfg.search.method,
            "goals": goals(cfg.search),
            "rounds": cfg.search.rounds,
            "prune": cfg.prune.method,
            "purify": cfg.purify.enabled,
            "scheme": cfg.prune.scheme,
            "rate": cfg.prune.rate,
            "rates_file": cfg.prune.rates or None,
        },
        "layers": results.get("layers", []),
        "admm": results.get("admm", []),
        "search": results.get("search", []),
        "purification": _purification_totals(results.get("purification", {})),
        "rates": results.get("rates", {}),
        "compact_max_abs_diff": results["compact_max_abs_diff"],
        "onnx_max_abs_diff": results["onnx_max_abs_diff"],
        "compile": {"target": target.name, "tvm_target": target.tvm_target, **results.get("compile", NOT_COMPILED)},
        "bench": results.get("bench", {}),
        "latency": results.get("latency"),
        "artifacts": _artifacts(run_dir, target.name),
        "timings": timings,
        "config": to_dict(cfg),
        "versions": {
            "autocompress": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _purification_totals(p: dict[str, Any]) -> dict[str, Any]:
    """Totals of both purification parts (the per-layer counts are in ``layers``)."""
    return {part: {k: v for k, v in body.items() if k != "layers"} for part, body in p.items()}


def _removed(purified: dict[str, Any], part: str) -> str:
    got = purified.get(part) or {}
    return f"{got.get('filters', 0)} / {got.get('columns', 0)}"


def _layer_row(x: dict[str, Any]) -> str:
    groups = f"{x['groups_kept']} / {x['groups_total']}" if x["groups_total"] else "—"
    cols = f"{x['columns_kept']} / {x['columns_total']}" if x["columns_total"] else "—"
    res = f"{x['residual']:.2e}" if x.get("residual") is not None else "—"
    purified = x.get("purified", {})
    return (f"| {x['name']} | {x['scheme']} | {x['rate']} | {groups} | {cols} | {x['coupled_to'] or ''} | {res} "
            f"| {_removed(purified, 'dead')} | {_removed(purified, 'redundant')} |")  # fmt: skip


def _admm_lines(r: dict[str, Any]) -> list[str]:
    admm = r.get("admm") or []
    if not admm:
        return []
    rows = [f"| {e['iteration']} | {e['rho']:.2e} | {e['loss']:.4f} | "
            + (f"{e['val_accuracy']:.2%}" if e.get("val_accuracy") is not None else "—")
            + f" | {e['max_residual']:.2e} |" for e in admm]  # fmt: skip
    lines = ["## ADMM", "", "| iteration | rho | training loss | validation top-1 | largest residual ‖W−Z‖/‖W‖ |",
             "|---:|---:|---:|---:|---:|", *rows, ""]  # fmt: skip
    if r.get("plots", {}).get("admm"):
        lines += [f"![ADMM residuals]({r['plots']['admm']})", ""]
    return lines


def _method_line(m: dict[str, Any]) -> str:
    """How the rates were chosen: the search and its target, or the uniform rate / rates file without one."""
    if m["search"] != "uniform" or m.get("goals"):
        rounds = m.get("rounds", 1)
        goal = "".join(f" to {x:g}× {obj}" for obj, x in (m.get("goals") or {}).items())
        how = f"`{m['search']}` search{goal} in {rounds} round{'s' if rounds != 1 else ''}"
    elif m.get("rates_file"):
        how = f"per-layer targets from `{m['rates_file']}`"
    else:
        how = f"`{m['scheme']}` scheme at rate {m['rate']} in every layer"
    return f"Method: {how}, `{m['prune']}` pruning" + (" + purification" if m.get("purify") else "") + "."


def _search_round(s: dict[str, Any]) -> str:
    best, obj = s["best"], s["objective"]
    return (f"- round {s['round']}: target {s['reduction']:g}× {obj}; {s['proposals']} proposals in "
            f"{s['seconds']:.1f} s ({s['proposals_per_minute']:g} / minute); best proxy top-1 "
            f"{best['accuracy']:.2%} at {best['ratio']:.2f}× {obj}")  # fmt: skip


def _search_lines(r: dict[str, Any]) -> list[str]:
    searched = r.get("search") or []
    if not searched:
        return []
    plots = r.get("plots", {})
    lines = ["## Search", "", *[_search_round(s) for s in searched], ""]
    for key, title in (("search_trace", "Search trace"), ("pareto", "Pareto front"), ("rates", "Per-layer rates")):
        lines += [f"![{title}]({plots[key]})", ""] if plots.get(key) else []
    rates = r.get("rates") or {}
    if rates:
        lines += ["Final per-layer rates:", "", "| layer | scheme | rate |", "|---|---|---:|",
                  *[f"| {name} | {x['scheme']} | {x['rate']:.4f} |" for name, x in rates.items()], ""]  # fmt: skip
    return lines


def _purify_lines(r: dict[str, Any]) -> list[str]:
    p = r.get("purification") or {}
    if not p:
        return []
    lines = ["## Purification", ""]
    for part, body in p.items():
        lines.append(f"- {part}: " + ", ".join(f"{k} {v}" for k, v in body.items() if not isinstance(v, list | dict)))
    return [*lines, ""]


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


def _latency_lines(r: dict[str, Any]) -> list[str]:
    """Predicted (latency tables) and measured (bench) speed-up side by side, for the tables' device."""
    lat = r.get("latency")
    if not lat:
        return []
    measured = r.get("bench", {}).get(lat["device"], {}).get("speedup")
    shown = f"{measured}×" if measured is not None else f"not measured (`ac bench RUN --bench {lat['device']}`)"
    return ["## Latency objective", "",
            f"| on {lat['device']} ({lat['metric']}) | dense | compressed | speed-up |", "|---|---:|---:|---:|",
            f"| predicted by the latency tables | {lat['dense']:,.0f} | {lat['compressed']:,.0f} | "
            f"{lat['predicted_speedup']}× |",
            f"| measured | | | {shown} |", "", f"Tables: `{lat['tables']}`.", ""]  # fmt: skip


def render_markdown(r: dict[str, Any]) -> str:
    d, c, ratio = r["dense"], r["compressed"], r["ratios"]
    lines = [
        f"# AutoCompress report: {r['model']} on {r['dataset']} → {r['target']}",
        "",
        _method_line(r["method"]),
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
        *_search_lines(r),
        "## Layers",
        "",
        "| layer | scheme | rate | filter groups kept | columns kept | coupled to | ADMM residual "
        "| dead filters / columns | redundant filters / columns |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
        *[_layer_row(x) for x in r["layers"]],
        "",
        *_admm_lines(r),
        *_purify_lines(r),
        *_bench_lines(r.get("bench", {})),
        *_latency_lines(r),
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


def _plots(run_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """Draw the run's plots into ``<run>/plots/``; their paths relative to the run, by name (none: no data)."""
    out = run_dir / "plots"
    plots = {"admm": plot_admm(report["admm"], out / "admm_residual.png")}
    if report["search"]:
        log = read_search_log(run_dir / "search.jsonl")
        plots["rates"] = plot_rates(report["rates"], out / "rates.png")
        plots["search_trace"] = plot_search_trace(log, out / "search_trace.png")
        plots["pareto"] = plot_pareto(log, out / "pareto.png", {s["round"]: s["reduction"] for s in report["search"]})
    return {name: str(path.relative_to(run_dir)) for name, path in plots.items() if path}


def write_report(
    run_dir: Path, cfg: CompressConfig, dataset: str, results: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    report = build_report(run_dir, cfg, dataset, results, timings)
    report["plots"] = _plots(run_dir, report)
    atomic_write_text(json.dumps(report, indent=2) + "\n", run_dir / "report.json")
    atomic_write_text(render_markdown(report), run_dir / "report.md")
    return report
