"""Render and write a run's report: report.json is the typed :class:`Report` (records.py, schema in
docs/report.md), and report.md is rendered from it, never separately."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ac_toolchain.report.plots import (
    plot_admm,
    plot_int8,
    plot_pareto,
    plot_rates,
    plot_search_trace,
    read_search_log,
)
from ac_toolchain.report.records import (
    AdmmIteration,
    BenchEntry,
    LayerRow,
    Method,
    Report,
    SearchSummary,
    read_report,
)
from ac_toolchain.runs import atomic_write_text, write_record


def _removed(purified: dict[str, dict[str, int]], part: str) -> str:
    got = purified.get(part) or {}
    return f"{got.get('filters', 0)} / {got.get('columns', 0)}"


def _layer_row(x: LayerRow) -> str:
    groups = f"{x.groups_kept} / {x.groups_total}" if x.groups_total else "—"
    cols = f"{x.columns_kept} / {x.columns_total}" if x.columns_total else "—"
    res = f"{x.residual:.2e}" if x.residual is not None else "—"
    return (f"| {x.name} | {x.scheme} | {x.rate} | {groups} | {cols} | {x.coupled_to or ''} | {res} "
            f"| {_removed(x.purified, 'dead')} | {_removed(x.purified, 'redundant')} |")  # fmt: skip


def _admm_row(e: AdmmIteration) -> str:
    val = f"{e.val_accuracy:.2%}" if e.val_accuracy is not None else "—"
    return f"| {e.iteration} | {e.rho:.2e} | {e.loss:.4f} | {val} | {e.max_residual:.2e} |"


def _admm_lines(r: Report) -> list[str]:
    if not r.admm:
        return []
    lines = ["## ADMM", "", "| iteration | rho | training loss | validation top-1 | largest residual ‖W−Z‖/‖W‖ |",
             "|---:|---:|---:|---:|---:|", *[_admm_row(e) for e in r.admm], ""]  # fmt: skip
    if r.plots.get("admm"):
        lines += [f"![ADMM residuals]({r.plots['admm']})", ""]
    return lines


def _method_line(m: Method) -> str:
    """How the rates were chosen: the search and its goal, or the uniform rate / rates file without one."""
    if m.search != "uniform" or m.goals:
        goal = "".join(f" to {x:g}× {obj}" for obj, x in m.goals.items())
        how = f"`{m.search}` search{goal} in {m.rounds} round{'s' if m.rounds != 1 else ''}"
    elif m.rates_file:
        how = f"per-layer targets from `{m.rates_file}`"
    else:
        how = f"`{m.scheme}` scheme at rate {m.rate} in every layer"
    line = f"Method: {how}, `{m.prune}` pruning" + (" + purification" if m.purify else "") + "."
    return line + (ADMM_NOTE if m.prune == "admm" else "")


# what the frontier benchmark measured of ADMM, said where a user reads a run that used it
ADMM_NOTE = (" ADMM measured no gain over one-shot pruning at equal epochs (docs/results.md); `--prune-method "
             "oneshot` or `--preset oneshot` trains the same epochs without it.")  # fmt: skip


def _search_round(s: SearchSummary) -> str:
    best, obj = s.best, s.objective
    return (f"- round {s.round}: goal {s.reduction:g}× {obj}; {s.proposals} proposals in "
            f"{s.seconds:.1f} s ({s.proposals_per_minute:g} / minute); best proxy top-1 "
            f"{best['accuracy']:.2%} at {best['ratio']:.2f}× {obj}")  # fmt: skip


def _search_lines(r: Report) -> list[str]:
    if not r.search:
        return []
    lines = ["## Search", "", *[_search_round(s) for s in r.search], ""]
    for key, title in (("search_trace", "Search trace"), ("pareto", "Pareto front"), ("rates", "Per-layer rates")):
        lines += [f"![{title}]({r.plots[key]})", ""] if r.plots.get(key) else []
    if r.rates:
        lines += ["Final per-layer rates:", "", "| layer | scheme | rate |", "|---|---|---:|",
                  *[f"| {name} | {x.scheme} | {x.rate:.4f} |" for name, x in r.rates.items()], ""]  # fmt: skip
    return lines


def _purify_lines(r: Report) -> list[str]:
    if not r.purification:
        return []
    lines = ["## Purification", ""]
    for part, body in r.purification.items():
        lines.append(f"- {part}: " + ", ".join(f"{k} {v}" for k, v in body.items() if not isinstance(v, list | dict)))
    return [*lines, *_purify_steps(r.purification.get("redundant", {}).get("steps") or []), ""]


def _points(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"  # None: a run from before drops and bounds were recorded


def _purify_steps(steps: list[dict[str, Any]]) -> list[str]:
    """Each redundant-removal batch: its mean drop and the bound its criterion held against the tolerance."""
    rows = [f"| {i} | {s['tried']} | {s['accuracy']:.2%} | {_points(s.get('drop'))} | {_points(s.get('bound'))} | "
            f"{'yes' if s['accepted'] else 'no'} |" for i, s in enumerate(steps, 1)]  # fmt: skip
    head = ["", "| step | structures | top-1 | drop (points) | bound (points) | kept |",
            "|---:|---:|---:|---:|---:|---|"]
    return [*head, *rows] if rows else []


def _bench_lines(benches: dict[str, BenchEntry]) -> list[str]:
    """One section per device measured with `ac bench` (report.json's "bench")."""
    lines = []
    for device, b in benches.items():
        check = (b.output_check or {}).get("max_abs_diff")
        lines += [f"## Bench on {device}", "", b.table, "",
                  f"Speed-up dense → compressed: {b.speedup}× ({b.metric})"
                  + (f"; outputs vs torch max abs difference {check:.2e}" if check is not None else "")
                  + f". Every sample: `{b.json}`.", ""]  # fmt: skip
    return lines


def _latency_lines(r: Report) -> list[str]:
    """Predicted (latency tables) and measured (bench) speed-up side by side, for the tables' device."""
    lat = r.latency
    if lat is None:
        return []
    measured = r.bench[lat.device].speedup if lat.device in r.bench else None
    shown = f"{measured}×" if measured is not None else f"not measured (`ac bench RUN --bench {lat.device}`)"
    return ["## Latency objective", "",
            f"| on {lat.device} ({lat.metric}) | dense | compressed | speed-up |", "|---|---:|---:|---:|",
            f"| predicted by the latency tables | {lat.dense:,.0f} | {lat.compressed:,.0f} | "
            f"{lat.predicted_speedup}× |",
            f"| measured | | | {shown} |", "", f"Tables: `{lat.tables}`.", ""]  # fmt: skip


def _int8_lines(r: Report) -> list[str]:
    """The Quantize stage's four models: accuracy, bytes and host latency under onnxruntime."""
    q = r.quantize
    if q is None:
        return []
    rows = [f"| {name} | {v.top1:.2%} | {v.bytes:,} | {v.host_ms:.3f} |" for name, v in q.variants.items()]
    sim = f"; our torch simulation of the compact int8 model: {q.simulated_top1:.2%}" if q.simulated_top1 else ""
    lines = ["## int8", "",
             f"Post-training quantization ({q.weights} weights, {q.activations} activations per tensor, "
             f"`{q.method}` calibration on {q.calib_batches} batches of {q.calib_batch_size}); top-1 on "
             f"{q.test_images} test images by onnxruntime{sim}.", "",
             "| model | top-1 | ONNX bytes | host ms / image (onnxruntime, 1 thread) |", "|---|---:|---:|---:|",
             *rows, "", f"Compact fp32 bytes ÷ compact int8 bytes: {q.size_ratio}×. A bench "
             "(above, or `ac bench RUN`) measures the compact int8 model too, as `compressed int8`.", ""]  # fmt: skip
    return lines + ([f"![int8 size vs accuracy]({r.plots['int8']})", ""] if r.plots.get("int8") else [])


def _distill_lines(r: Report) -> list[str]:
    """The cost of distilling from the dense model: its forward passes, over every training stage."""
    if not r.distill:
        return []
    seconds, epochs = sum(c.teacher_seconds for c in r.distill.values()), sum(c.epochs for c in r.distill.values())
    per_epoch = f" ({seconds / epochs:.2f} s / epoch)" if epochs else ""
    return [f"- teacher forward passes (distillation): {seconds:.1f} s over {epochs} epochs{per_epoch}"]


def _dense_lines(r: Report) -> list[str]:
    """How the dense model came to be: loaded with --dense, or trained (epochs, the last new best, validation)."""
    t = r.dense_training
    if t is None:
        return []
    val = f"validation top-1 {t.val_accuracy:.2%}" if t.val_accuracy is not None else "no validation split"
    if t.loaded:
        return [f"Dense model: loaded from `{t.loaded}` ({val}).", ""]
    kept = f"last new best at epoch {t.best_epoch}, {val}" if t.val_accuracy is not None else f"the last kept ({val})"
    return [f"Dense model: trained {t.epochs} of {t.max_epochs} epochs; {kept}.", ""]


def _compile_line(r: Report) -> str:
    diff = r.compile.max_abs_diff
    return f"Compile ({r.target}): {r.compile.status}" + (f"; max |TVM - torch| {diff:.2e}" if diff is not None else "")


def render_markdown(r: Report) -> str:
    d, c, ratio = r.dense, r.compressed, r.ratios
    lines = [
        f"# AutoCompress report: {r.model} on {r.dataset} → {r.target}",
        "",
        _method_line(r.method),
        "",
        "| | top-1 accuracy | params | FLOPs (MACs) |",
        "|---|---:|---:|---:|",
        f"| dense | {d.accuracy:.2%} | {d.params:,} | {d.flops:,} |",
        f"| compressed | {c.accuracy:.2%} | {c.params:,} | {c.flops:,} |",
        f"| ratio | {-r.accuracy_drop_points:+.2f} points | {ratio['params']}× | {ratio['flops']}× |",
        "",
        *_dense_lines(r),
        _compile_line(r) + ".",
        "",
        f"Compact vs masked model, max abs difference: {r.compact_max_abs_diff:.2e}; "
        f"ONNX (onnxruntime) vs masked: {r.onnx_max_abs_diff:.2e}.",
        "",
        *_search_lines(r),
        "## Layers",
        "",
        "| layer | scheme | rate | filter groups kept | columns kept | coupled to | ADMM residual "
        "| dead filters / columns | redundant filters / columns |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
        *[_layer_row(x) for x in r.layers],
        "",
        *_admm_lines(r),
        *_purify_lines(r),
        *_bench_lines(r.bench),
        *_latency_lines(r),
        *_int8_lines(r),
        "## Timings (s)",
        "",
        *[f"- {stage}: {sec:.1f}" for stage, sec in r.timings.items()],
        *_distill_lines(r),
        "",
        "## Artifacts",
        "",
        *[f"- {name}: `{path}`" for name, path in r.artifacts.items()],
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _plots(run_dir: Path, report: Report) -> dict[str, str]:
    """Draw the run's plots into ``<run>/plots/``; their paths relative to the run, by name (none: no data)."""
    out = run_dir / "plots"
    plots = {"admm": plot_admm([asdict(e) for e in report.admm], out / "admm_residual.png")}
    if report.search:
        log = read_search_log(run_dir / "search.jsonl")
        plots["rates"] = plot_rates({k: asdict(v) for k, v in report.rates.items()}, out / "rates.png")
        plots["search_trace"] = plot_search_trace(log, out / "search_trace.png")
        plots["pareto"] = plot_pareto(log, out / "pareto.png", {s.round: s.reduction for s in report.search})
    if report.quantize:
        plots["int8"] = plot_int8({k: asdict(v) for k, v in report.quantize.variants.items()}, out / "int8.png")
    return {name: str(path.relative_to(run_dir)) for name, path in plots.items() if path}


def write_report(run_dir: Path, report: Report, plots: bool = True) -> Report:
    """Draw the plots (unless ``plots`` is false: a re-render keeps the ones it has), write report.json and
    report.md."""
    if plots:
        report.plots = _plots(run_dir, report)
    write_record(report, run_dir / "report.json")
    atomic_write_text(render_markdown(report), run_dir / "report.md")
    return report


def rerender(run_dir: Path, **changes: Any) -> Report | None:
    """Rewrite report.json, report.md and the plots of a finished run with ``changes`` set on its report (``ac
    quantize RUN`` adds its int8 section); None when the run has no report."""
    if not (run_dir / "report.json").is_file():
        return None
    report = read_report(run_dir / "report.json")
    for key, value in changes.items():
        setattr(report, key, value)
    return write_report(run_dir, report)
