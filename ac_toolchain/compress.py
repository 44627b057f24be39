"""The ``ac compress`` pipeline (docs/architecture.md):

    Dense -> Evaluate -> Round [ADMM -> hard prune + retrain -> purify] -> Evaluate
          -> Compact + Export -> Compile -> Bench -> Report

The pruning stages live in stages.py; this module runs them, then the back half. Every product is written
into the run directory as soon as it exists, so a failure later never loses what was made before, and
``--resume`` skips every stage whose products are there (a half-done training stage continues from its
newest checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain.bench_run import QUICK, bench_run, device_for, latency_device, report_entry
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile import get_target
from ac_toolchain.compile.tuning import check_tunable
from ac_toolchain.compile.tvm_build import TVM_ONNX, check_toolchain, compile_onnx, load_host_module
from ac_toolchain.config import CompressConfig
from ac_toolchain.context import Run, console, open_run
from ac_toolchain.cost.analytic import called_modules, masks_cost, structure_cost
from ac_toolchain.count import count
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.graph import trace
from ac_toolchain.latency_tables import check_profilable, read_model
from ac_toolchain.report import write_report
from ac_toolchain.runs import atomic_save
from ac_toolchain.stages import Dense, State, latency_path, new_state, pruning_stages, run_stages
from ac_toolchain.train import evaluate, make_loader

Results = dict[str, Any]


def _check_target(cfg: CompressConfig) -> None:
    check_toolchain(get_target(cfg.run.target))  # fail before training, not after
    check_tunable(get_target(cfg.run.target), cfg.run.tune_trials)
    device_for(cfg.run.target, cfg.run.bench)
    if "latency" in cfgmod.goals(cfg.search):
        check_profilable(latency_device(cfg.run.target, cfg.run.bench))


COMPRESS_CHECKS = (_check_target,)


def measure(run: Run, model: nn.Module, key: str, results: Results) -> None:
    """Test accuracy plus params/FLOPs of the non-zero structure, stored under results[key]."""
    loader = make_loader(run.splits.test, run.cfg.train.batch_size, shuffle=False)
    acc = evaluate(model, loader, run.device, label=f"test {key}")
    counts = count(model.cpu(), run.example)
    model.to(run.device)
    results[key] = {"accuracy": round(acc, 6), **counts}
    console.print(f"{key}: top-1 {acc:.2%}, {counts['params']:,} params, {counts['flops']:,} MACs")


def export_stage(run: Run, model: nn.Module, results: Results) -> None:
    """Compact the pruned model physically, then export it; both are checked against the masked model."""
    masked = model.cpu().eval()
    small = compact(masked, run.example).eval()
    with torch.no_grad():
        results["compact_max_abs_diff"] = float((small(run.example) - masked(run.example)).abs().max())
    path = export_onnx(small, run.example, run.dir / "model.onnx")
    results["onnx_max_abs_diff"] = check_with_onnxruntime(path, masked, run.example)
    export_onnx(expand_columns(small), run.example, run.dir / TVM_ONNX)  # what the compile stage imports
    model.to(run.device)


def compile_stage(run: Run, model: nn.Module, results: Results) -> None:
    """TVM-compile model.tvm.onnx for the run's target into <run>/<target>/; x86 artifacts are run and checked."""
    target = get_target(run.cfg.run.target)
    out_dir = run.dir / target.name
    manifest = compile_onnx(run.dir / TVM_ONNX, target, out_dir, run.cfg.run.tune_trials)
    keys = ("files", "build_seconds", "schedules", "kernel_rows", "tuning")
    result: dict[str, Any] = {"dir": str(out_dir), "manifest": str(out_dir / "manifest.json"),
                              **{k: manifest.get(k) for k in keys}}  # fmt: skip
    run_here = LOCAL_CHECKS.get((target.name, target.link))
    if run_here is not None:
        got = run_here(out_dir, run.example.numpy())
        with torch.no_grad():
            want = model.cpu().eval()(run.example).numpy()
        model.to(run.device)
        result["max_abs_diff"] = float(abs(got - want).max())
        result["status"] = "compiled with TVM; outputs checked against torch on this machine" + (
            " (under qemu-aarch64)" if target.link == "static" else "")  # fmt: skip
    else:
        result["status"] = (
            f"compiled with TVM for {target.name}; executed by `ac bench RUN --bench qemu-arm64` (a static "
            "runner per model, run under qemu-user) or on a phone with --bench adb:<serial>"
        )
    results["compile"] = result


def bench_stage(run: Run, device: str, results: Results) -> None:
    """Dense vs compressed on the bench device (`ac bench` with quick settings); the result goes in the report."""
    result = bench_run(run.dir, device, QUICK)
    results.setdefault("bench", {})[device] = report_entry(run.dir, result)
    console.print(f"speed-up dense → compressed on {device}: [bold]{result['speedup']}×[/] ({result['metric']})")


def latency_stage(run: Run, model: nn.Module, results: Results) -> None:
    """With latency tables in the run: the compressed model's predicted cost and speed-up (the report puts the
    measured one beside it)."""
    path = latency_path(run)
    if not path.is_file():
        return
    tables = read_model(path)
    net = model.cpu().eval()
    graph, used = trace(net, run.example), called_modules(net, run.example)
    cost = masks_cost(graph, {}, used, tables)  # of its zero pattern
    dense = structure_cost(graph, (), {}, used, tables).latency  # nothing removed
    model.to(run.device)
    results["latency"] = {"device": tables.device, "metric": tables.metric, "unit": tables.unit,
                          "dense": round(dense, 3), "compressed": round(cost.latency, 3),
                          "predicted_speedup": round(dense / cost.latency, 3), "tables": str(path)}  # fmt: skip
    console.print(f"predicted speed-up on {tables.device}: [bold]{dense / cost.latency:.2f}×[/] ({tables.metric})")


def _under_qemu(out_dir: Path, x: np.ndarray) -> np.ndarray:
    from android_bench.qemu import QemuDevice

    return QemuDevice().infer(out_dir, [x])[0]


def _on_host(out_dir: Path, x: np.ndarray) -> np.ndarray:
    return load_host_module(out_dir)(x)


LOCAL_CHECKS = {("x86", "shared"): _on_host, ("android-arm64", "static"): _under_qemu}  # artifacts run here


def round_results(state: State) -> dict[str, Any]:
    """The report's view of the last round: per-layer plan with residual and purified counts, ADMM, purification."""
    record = state.current()
    last = record.admm[-1]["residual"] if record.admm else {}
    dead = record.purification.get("dead", {}).get("layers", {})
    redundant = record.purification.get("redundant", {}).get("layers", {})
    layers = [{**x, "residual": last.get(x["name"]),
               "purified": {"dead": dead.get(x["name"], {}), "redundant": redundant.get(x["name"], {})}}
              for x in record.layers]  # fmt: skip
    return {"layers": layers, "admm": record.admm, "purification": record.purification,
            "search": [r.search for r in state.rounds if r.search], "rates": {
        k: {"rate": v.rate, "scheme": v.scheme} for k, v in record.spec.items()}}  # fmt: skip


def compress(
    model: str | CompressConfig,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the whole chain; returns the report dict (also written to report.json / report.md).

    ``model`` is a resolved config, or a zoo name / recipe path / ``file.py:Builder`` resolved with
    ``preset`` and ``overrides`` (``{"search.params_x": 20}``).
    """
    cfg = model if isinstance(model, CompressConfig) else cfgmod.resolve(model, preset, overrides)[0]
    run = open_run(cfg, run_dir, COMPRESS_CHECKS, after_model=(cfgmod.check_search,))
    results: Results = {}
    stages = pruning_stages(run)
    dense_at = next(i for i, stage in enumerate(stages) if isinstance(stage, Dense)) + 1
    state = run_stages(run, stages[:dense_at], new_state(run))
    with run.stage("evaluate dense"):
        export_onnx(state.model.cpu().eval(), run.example, run.dir / "dense.onnx")  # what `ac bench` compares with
        state.model.to(run.device)
        measure(run, state.model, "dense", results)
    state = run_stages(run, stages[dense_at:], state)
    atomic_save(state.model.state_dict(), run.dir / "compressed.pt")
    results.update(round_results(state))
    with run.stage("evaluate compressed"):
        measure(run, state.model, "compressed", results)
    net = state.model  # the final masked model
    with run.stage("export onnx"):
        export_stage(run, net, results)
    with run.stage(f"compile {cfg.run.target}"):
        compile_stage(run, net, results)
    latency_stage(run, net, results)
    bench_device = device_for(cfg.run.target, cfg.run.bench)
    if bench_device:
        with run.stage(f"bench on {bench_device}"):
            bench_stage(run, bench_device, results)
    report = write_report(run.dir, run.cfg, run.splits.name, results, run.timings)
    console.print(f"[bold green]done[/]: {run.dir / 'report.md'}")
    return report
