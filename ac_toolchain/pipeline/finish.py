"""The back half of the pipeline: Evaluate, Compact, Export, Compile, Bench and Report.

Each stage writes what it found to ``records/<stage>.json`` after its other products, so ``--resume`` skips a
finished stage (no second ONNX export or TVM build) and restores its findings into the typed
:class:`~ac_toolchain.report.records.Findings` that the Report stage turns into report.json.
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ac_toolchain import __version__
from ac_toolchain import config as cfgmod
from ac_toolchain.bench_run import QUICK, bench_run, report_entry
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile.tvm_build import TVM_ONNX, compile_onnx
from ac_toolchain.context import Run, console, load_model
from ac_toolchain.cost.analytic import called_modules, masks_cost, structure_cost
from ac_toolchain.count import count
from ac_toolchain.errors import CheckpointError
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.graph import trace
from ac_toolchain.latency_tables import read_model
from ac_toolchain.pipeline.base import Stage, State, atomic_save, write_record
from ac_toolchain.pipeline.rounds import latency_path
from ac_toolchain.report.records import (
    BenchEntry,
    CompileRecord,
    EquivalenceCheck,
    LatencyPrediction,
    LayerRow,
    LayerSetting,
    Measurement,
    Method,
    Report,
    read_report,
)
from ac_toolchain.report.render import write_report
from ac_toolchain.runs import load_state_dict, read_record, safe_name
from ac_toolchain.train import evaluate, make_loader

R = TypeVar("R")


def measure(run: Run, model: nn.Module, label: str) -> Measurement:
    """Test accuracy plus params / FLOPs of the model's non-zero structure."""
    loader = make_loader(run.splits.test, run.cfg.train.batch_size, shuffle=False)
    acc = evaluate(model, loader, run.device, label=f"test {label}")
    counts = count(model.cpu(), run.example)
    model.to(run.device)
    console.print(f"{label}: top-1 {acc:.2%}, {counts['params']:,} params, {counts['flops']:,} MACs")
    return Measurement(round(acc, 6), counts["params"], counts["flops"])


class RecordStage(Stage):
    """A back-half stage: its findings land in ``records/<file>.json`` last, after its other products."""

    file = "stage"

    def record(self, run: Run) -> Path:
        return run.dir / "records" / f"{self.file}.json"

    def outputs(self, run: Run) -> list[Path]:
        return []

    def products(self, run: Run) -> list[Path]:
        return [*self.outputs(run), self.record(run)]

    def save(self, run: Run, found: Any) -> None:
        write_record(found, self.record(run))

    def load(self, run: Run, kind: type[R]) -> R:
        return read_record(kind, self.record(run))


class EvaluateDense(RecordStage):
    name, label, file = "evaluate dense", "Evaluate", "evaluate-dense"

    def run(self, run: Run, state: State) -> State:
        self.save(run, measure(run, state.model, "dense"))
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        state.found.dense = self.load(run, Measurement)
        return state


class EvaluateCompressed(RecordStage):
    """The final masked model: saved as compressed.pt, measured, and its predicted latency with tables."""

    name, label, file = "evaluate compressed", "Evaluate", "evaluate-compressed"

    def outputs(self, run: Run) -> list[Path]:
        return [run.dir / "compressed.pt"]

    def run(self, run: Run, state: State) -> State:
        atomic_save(state.model.state_dict(), run.dir / "compressed.pt")
        if run.platform.latency_device and latency_path(run).is_file():
            prediction = predict_latency(run, state.model)
            write_record(prediction, self._latency(run))
        self.save(run, measure(run, state.model, "compressed"))  # the record last: the stage is done
        return self.finish(run, state)

    def _latency(self, run: Run) -> Path:
        return run.dir / "records" / "latency-prediction.json"

    def restore(self, run: Run, state: State) -> State:
        load_state_dict(state.model, run.dir / "compressed.pt")
        state.found.compressed = self.load(run, Measurement)
        if self._latency(run).is_file():
            state.found.latency = read_record(LatencyPrediction, self._latency(run))
        return state


def predict_latency(run: Run, model: nn.Module) -> LatencyPrediction:
    """The compressed model's cost and speed-up by the run's latency tables (the report sets the measured one
    beside it)."""
    path = latency_path(run)
    tables = read_model(path)
    net = model.cpu().eval()
    graph, used = trace(net, run.example), called_modules(net, run.example)
    cost = masks_cost(graph, {}, used, tables)  # of its zero pattern
    dense = structure_cost(graph, (), {}, used, tables).latency  # nothing removed
    model.to(run.device)
    console.print(f"predicted speed-up on {tables.device}: [bold]{dense / cost.latency:.2f}×[/] ({tables.metric})")
    return LatencyPrediction(tables.device, tables.metric, tables.unit, round(dense, 3), round(cost.latency, 3),
                             round(dense / cost.latency, 3), str(path))  # fmt: skip


class CheckStage(RecordStage):
    """A stage whose finding is one equivalence check, kept in ``Findings.<found>``."""

    found = "check"

    def restore(self, run: Run, state: State) -> State:
        setattr(state.found, self.found, self.load(run, EquivalenceCheck).max_abs_diff)
        return state


class Compact(CheckStage):
    """Filters and channels removed physically, column-pruned convs gathered; checked against the masked model."""

    name, label, file, found = "compact", "Compact", "compact", "compact_max_abs_diff"
    parallel = False  # rank 0 alone

    def run(self, run: Run, state: State) -> State:
        state.compact = small = compact_model(run, state.model)
        with torch.no_grad():
            diff = float((small(run.example) - state.model.cpu().eval()(run.example)).abs().max())
        state.model.to(run.device)
        self.save(run, EquivalenceCheck(diff))
        return self.finish(run, state)


def compact_model(run: Run, model: nn.Module) -> nn.Module:
    """The compact (physically smaller) model of a masked one, on the CPU; the masked model is left in place."""
    small = compact(model.cpu().eval(), run.example).eval()
    model.to(run.device)
    return small


class Export(CheckStage):
    """ONNX files: model.onnx (the compact model, checked with onnxruntime), model.tvm.onnx (what Compile
    imports: column-pruned convs as zero columns) and dense.onnx (what ``ac bench`` compares with)."""

    name, label, file, found = "export onnx", "Export", "export", "onnx_max_abs_diff"
    parallel = False  # rank 0 alone

    def outputs(self, run: Run) -> list[Path]:
        return [run.dir / "dense.onnx", run.dir / "model.onnx", run.dir / TVM_ONNX]

    def run(self, run: Run, state: State) -> State:
        small = state.compact if state.compact is not None else compact_model(run, state.model)
        masked = state.model.cpu().eval()
        path = export_onnx(small, run.example, run.dir / "model.onnx")
        diff = check_with_onnxruntime(path, masked, run.example)
        export_onnx(expand_columns(small), run.example, run.dir / TVM_ONNX)
        export_onnx(load_model(run, "dense.pt"), run.example, run.dir / "dense.onnx")
        state.model.to(run.device)
        self.save(run, EquivalenceCheck(diff))
        return self.finish(run, state)



class Compile(RecordStage):
    """TVM build of model.tvm.onnx for the run's target into ``<run>/<target>/``; run and checked against
    torch where the platform runs its artifacts on this machine."""

    name, label, file = "compile", "Compile", "compile"
    parallel = False  # rank 0 alone

    def outputs(self, run: Run) -> list[Path]:
        return [run.dir / run.platform.target.name / "manifest.json"]

    def run(self, run: Run, state: State) -> State:
        target = run.platform.target
        out_dir = run.dir / target.name
        console.print(f"compiling for {target.name}")
        manifest = compile_onnx(run.dir / TVM_ONNX, target, out_dir, run.cfg.run.tune_trials)
        keys = ("files", "build_seconds", "schedules", "kernel_rows", "tuning")
        record = CompileRecord(target.name, target.tvm_target, _compile_status(run), str(out_dir),
                               str(out_dir / "manifest.json"), **{k: manifest.get(k) for k in keys})  # fmt: skip
        got = run.platform.check_outputs_here(out_dir, run.example.numpy())
        if got is not None:
            with torch.no_grad():
                want = state.model.cpu().eval()(run.example).numpy()
            state.model.to(run.device)
            record.max_abs_diff = float(abs(got - want).max())
        self.save(run, record)
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        state.found.compile = self.load(run, CompileRecord)
        return state


def _compile_status(run: Run) -> str:
    target = run.platform.target
    if run.platform.checks_here:
        where = " (under qemu-aarch64)" if target.link == "static" else ""
        return f"compiled with TVM; outputs checked against torch on this machine{where}"
    return (f"compiled with TVM for {target.name}; executed by `ac bench RUN --bench qemu-arm64` (a static runner "
            "per model, run under qemu-user) or on a phone with --bench adb:<serial>")  # fmt: skip


class Bench(RecordStage):
    """Dense vs compressed on the platform's bench device (``ac bench`` with quick settings)."""

    name, label = "bench", "Bench"
    parallel = False  # rank 0 alone

    def __init__(self, device: str) -> None:
        self.device, self.file, self.name = device, f"bench-{safe_name(device)}", f"bench on {device}"

    def run(self, run: Run, state: State) -> State:
        console.print(f"benchmarking on {self.device}")
        result = bench_run(run.dir, self.device, QUICK)
        self.save(run, report_entry(run.dir, result))
        console.print(f"speed-up dense → compressed on {self.device}: [bold]{result['speedup']}×[/] "
                      f"({result['metric']})")  # fmt: skip
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        state.found.bench[self.device] = self.load(run, BenchEntry)
        return state


class ReportStage(Stage):
    """report.json (the typed :class:`~ac_toolchain.report.records.Report`), report.md and plots."""

    name, label = "report", "Report"
    parallel = False  # rank 0 alone

    def products(self, run: Run) -> list[Path]:
        return [run.dir / "report.json", run.dir / "report.md"]

    def run(self, run: Run, state: State) -> State:
        state.report = write_report(run.dir, assemble_report(run, state))
        console.print(f"[bold green]done[/]: {run.dir / 'report.md'}")
        return state

    def restore(self, run: Run, state: State) -> State:
        state.report = read_report(run.dir / "report.json")
        return state


ARTIFACTS = ("config.toml", "dense.pt", "compressed.pt", "dense.onnx", "model.onnx", "report.json", "report.md")


def assemble_report(run: Run, state: State) -> Report:
    """The run's report from the rounds' records and the back half's findings."""
    f, cfg, target = state.found, run.cfg, run.platform.target
    if f.dense is None or f.compressed is None or f.compact_max_abs_diff is None or f.onnx_max_abs_diff is None:
        raise CheckpointError(f"{run.dir}: the report needs the Evaluate, Compact and Export records; "
                              "resume the run (`ac compress --resume RUN`)")  # fmt: skip
    dense, comp = f.dense, f.compressed
    rounds = round_parts(state)
    return Report(
        model=cfg.model.arch, dataset=run.splits.name, target=target.name, dense=dense, compressed=comp,
        accuracy_drop_points=round(100 * (dense.accuracy - comp.accuracy), 3),
        ratios={k: _ratio(getattr(dense, k), getattr(comp, k)) for k in ("params", "flops")}, method=Method.of(cfg),
        compact_max_abs_diff=f.compact_max_abs_diff, onnx_max_abs_diff=f.onnx_max_abs_diff,
        compile=f.compile or CompileRecord(target.name, target.tvm_target, "not compiled"),
        dense_training=f.dense_training, **rounds,
        bench=dict(f.bench), latency=f.latency, quantize=f.quantize, artifacts=_artifacts(run.dir, target.name),
        timings=dict(run.timings), config=cfgmod.to_dict(cfg), versions=_versions(),
    )  # fmt: skip


def round_parts(state: State) -> dict[str, Any]:
    """The report's view of the rounds: the last round's per-layer rows, ADMM log, purification totals and
    spec, and every round's search summary and distillation cost."""
    if not state.rounds:
        return {}
    record = state.current()
    last = record.admm[-1].residual if record.admm else {}
    parts = {"dead": record.purification.dead, "redundant": record.purification.redundant} if (
        record.purification) else {}  # fmt: skip
    removed = {part: {k: asdict(v) for k, v in body.layers.items()} for part, body in parts.items()}
    purified = {name: {part: removed.get(part, {}).get(name, {}) for part in ("dead", "redundant")}
                for name in (x.name for x in record.layers)}  # fmt: skip
    layers = [LayerRow(**asdict(x), residual=last.get(x.name), purified=purified[x.name]) for x in record.layers]
    totals = {part: {k: v for k, v in asdict(body).items() if k != "layers"} for part, body in parts.items()}
    return {"layers": layers, "admm": record.admm, "purification": totals,
            "search": [r.search for r in state.rounds if r.search is not None],
            "distill": {name: cost for r in state.rounds for name, cost in r.distill.items()},
            "rates": {k: LayerSetting(v.rate, v.scheme) for k, v in record.spec.items()}}  # fmt: skip


def _ratio(dense: int, compressed: int) -> float:
    return round(dense / compressed, 3) if compressed else float("inf")


def _artifacts(run_dir: Path, target: str) -> dict[str, str]:
    names = [n for n in ARTIFACTS if (run_dir / n).exists() or n.startswith("report")]
    names += [target] if (run_dir / target).is_dir() else []
    return {name: str(run_dir / name) for name in names}


def _versions() -> dict[str, str]:
    return {"autocompress": __version__, "torch": torch.__version__, "python": platform.python_version()}


