"""The ``ac compress`` chain: dense model -> prune -> fine-tune -> ONNX -> report.

Each stage writes its products into the run directory as soon as they exist, so a failure later never loses
what was made before, and ``--resume`` skips whatever is already there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain.bench import QUICK, bench_run, device_for, report_entry
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile import get_target
from ac_toolchain.compile.tuning import check_tunable
from ac_toolchain.compile.tvm_build import TVM_ONNX, check_toolchain, compile_onnx, load_host_module
from ac_toolchain.config import CompressConfig
from ac_toolchain.count import count
from ac_toolchain.data import Splits, load_dataset
from ac_toolchain.errors import CheckpointError, ConfigError
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.prune import uniform_prune
from ac_toolchain.report import write_report
from ac_toolchain.runs import atomic_save, latest_checkpoint, load_state_dict, new_run_dir, save_checkpoint
from ac_toolchain.train import FitSettings, evaluate, fit, make_loader, pick_device, seed_everything
from ac_toolchain.zoo import build_model

console = Console(stderr=True)


@dataclass
class Run:
    """Everything the stages share: config, run directory, device, data and what has been measured."""

    cfg: CompressConfig
    dir: Path
    device: torch.device
    splits: Splits
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def example(self) -> torch.Tensor:
        return example_input(self.cfg)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        console.print(f"[bold cyan]▶ {name}[/]")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def example_input(cfg: CompressConfig) -> torch.Tensor:
    """The run's fixed example input: exports and output checks use it (the global RNG is left alone)."""
    return torch.randn(*cfg.model.input_shape, generator=torch.Generator().manual_seed(cfg.run.seed))


def build(cfg: CompressConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg.model``; zoo options are passed only when set, so user builders need not take them."""
    options: dict[str, Any] = {}
    if cfg.model.stem != "auto":
        options["stem"] = cfg.model.stem
    if cfg.model.width_mult != 1.0:
        options["width_mult"] = cfg.model.width_mult
    _, c, h, w = cfg.model.input_shape
    return build_model(cfg.model.arch, num_classes=num_classes, in_channels=c, input_size=(h, w), **options)


def open_run(cfg: CompressConfig, run_dir: Path | None = None) -> Run:
    """Create (or reopen, for resume) the run directory and load the data."""
    check_toolchain(get_target(cfg.run.target))  # fail before training, not after
    check_tunable(get_target(cfg.run.target), cfg.run.tune_trials)
    device_for(cfg.run.target, cfg.run.bench)
    seed_everything(cfg.run.seed)
    if run_dir is None:
        run_dir = new_run_dir(cfg.run.runs_dir, cfg.model.arch, cfg.run.target)
        cfgmod.save(cfg, run_dir / "config.toml")
    console.print(f"run directory: [bold]{run_dir}[/]")
    _, c, h, w = cfg.model.input_shape
    splits = load_dataset(
        cfg.data.dataset, (c, h, w), seed=cfg.run.seed,
        val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
    )  # fmt: skip
    if cfg.model.num_classes and cfg.model.num_classes != splits.num_classes:
        raise ConfigError(
            f"model.num_classes = {cfg.model.num_classes} but {splits.name} has {splits.num_classes} classes; "
            "drop --model-num-classes (0 takes the dataset's)"
        )
    return Run(cfg, run_dir, pick_device(cfg.run.device), splits)


def _fit_stage(run: Run, model: nn.Module, stage: str, settings: FitSettings, masks: Any = None) -> None:
    """Train with a checkpoint after every epoch; continues from the stage's newest checkpoint if any."""
    resume = latest_checkpoint(run.dir, stage)
    if resume is not None:
        console.print(f"resuming {stage} after epoch {resume['epoch']}")

    def checkpoint(epoch: int, state: dict[str, Any]) -> None:
        save_checkpoint(run.dir, stage, epoch, state)

    fit(model, run.splits.train, settings, run.device, seed=run.cfg.run.seed, masks=masks,
        resume=resume, on_epoch_end=checkpoint, label=stage)  # fmt: skip


def dense_model(run: Run) -> nn.Module:
    """Load the dense model (``--dense``, or this run's dense.pt) or train it."""
    cfg = run.cfg
    model = build(cfg, run.splits.num_classes)
    source = Path(cfg.model.checkpoint) if cfg.model.checkpoint else run.dir / "dense.pt"
    if source.is_file():
        load_state_dict(model, source)
        console.print(f"dense model loaded from {source}")
    elif cfg.model.checkpoint:
        raise CheckpointError(f"--dense {source}: file not found")
    else:
        t = cfg.train
        settings = FitSettings(t.epochs, t.lr, t.batch_size, t.momentum, t.weight_decay, t.max_batches)
        _fit_stage(run, model, "dense", settings)
        atomic_save(model.state_dict(), run.dir / "dense.pt")
    return model.to(run.device)


def measure(run: Run, model: nn.Module, key: str) -> None:
    """Test accuracy plus params/FLOPs of the non-zero structure, stored under results[key]."""
    loader = make_loader(run.splits.test, run.cfg.train.batch_size, shuffle=False)
    acc = evaluate(model, loader, run.device, label=f"test {key}")
    counts = count(model.cpu(), run.example)
    model.to(run.device)
    run.results[key] = {"accuracy": round(acc, 6), **counts}
    console.print(f"{key}: top-1 {acc:.2%}, {counts['params']:,} params, {counts['flops']:,} MACs")


def prune_and_finetune(run: Run, model: nn.Module) -> nn.Module:
    """Uniform pruning of every conv at prune.rate with prune.scheme, then masked fine-tuning."""
    p, t = run.cfg.prune, run.cfg.train
    masks, log = uniform_prune(model.cpu(), run.example, p.rate, p.scheme)
    model.to(run.device)
    run.results["layers"] = [vars(entry) for entry in log]
    settings = FitSettings(p.finetune_epochs, p.finetune_lr, t.batch_size, t.momentum, t.weight_decay,
                           t.max_batches)  # fmt: skip
    _fit_stage(run, model, "finetune", settings, masks=masks)
    atomic_save(model.state_dict(), run.dir / "compressed.pt")
    return model


def export_stage(run: Run, model: nn.Module) -> None:
    """Compact the pruned model physically, then export it; both are checked against the masked model."""
    masked = model.cpu().eval()
    small = compact(masked, run.example).eval()
    with torch.no_grad():
        run.results["compact_max_abs_diff"] = float((small(run.example) - masked(run.example)).abs().max())
    path = export_onnx(small, run.example, run.dir / "model.onnx")
    run.results["onnx_max_abs_diff"] = check_with_onnxruntime(path, masked, run.example)
    export_onnx(expand_columns(small), run.example, run.dir / TVM_ONNX)  # what the compile stage imports
    model.to(run.device)


def compile_stage(run: Run, model: nn.Module) -> None:
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
            f"compiled with TVM for {target.name}; executed by `ac bench RUN --device qemu-arm64` (a static "
            "runner per model, run under qemu-user) or on a phone with --device adb:<serial>"
        )
    run.results["compile"] = result


def bench_stage(run: Run, device: str) -> None:
    """Dense vs compressed on the bench device (`ac bench` with quick settings); the result goes in the report."""
    result = bench_run(run.dir, device, QUICK)
    run.results.setdefault("bench", {})[device] = report_entry(run.dir, result)
    console.print(f"speed-up dense → compressed on {device}: [bold]{result['speedup']}×[/] ({result['metric']})")


def _under_qemu(out_dir: Path, x: np.ndarray) -> np.ndarray:
    from android_bench.qemu import QemuDevice

    return QemuDevice().infer(out_dir, [x])[0]


def _on_host(out_dir: Path, x: np.ndarray) -> np.ndarray:
    return load_host_module(out_dir)(x)


LOCAL_CHECKS = {("x86", "shared"): _on_host, ("android-arm64", "static"): _under_qemu}  # artifacts run here


def compress(
    model: str | CompressConfig,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the whole chain; returns the report dict (also written to report.json / report.md).

    ``model`` is a resolved config, or a zoo name / recipe path / ``file.py:Builder`` resolved with
    ``preset`` and ``overrides`` (``{"prune.rate": 0.7}``).
    """
    cfg = model if isinstance(model, CompressConfig) else cfgmod.resolve(model, preset, overrides)[0]
    run = open_run(cfg, run_dir)
    with run.stage("dense"):
        net = dense_model(run)
        export_onnx(net.cpu().eval(), run.example, run.dir / "dense.onnx")  # what `ac bench` compares against
        net.to(run.device)
    with run.stage("evaluate dense"):
        measure(run, net, "dense")
    with run.stage("prune + fine-tune"):
        net = prune_and_finetune(run, net)
    with run.stage("evaluate compressed"):
        measure(run, net, "compressed")
    with run.stage("export onnx"):
        export_stage(run, net)
    with run.stage(f"compile {cfg.run.target}"):
        compile_stage(run, net)
    bench_device = device_for(cfg.run.target, cfg.run.bench)
    if bench_device:
        with run.stage(f"bench on {bench_device}"):
            bench_stage(run, bench_device)
    report = write_report(run.dir, run.cfg, run.splits.name, run.results, run.timings)
    console.print(f"[bold green]done[/]: {run.dir / 'report.md'}")
    return report
