"""The run context every command shares: config, run directory, device, data, the model builder.

Both the compress pipeline (compress.py) and ``ac bench`` (bench.py) use it; neither imports the other for it.
:func:`open_run` validates everything that can be validated before a run directory exists and before any
training (:func:`check_model`, :func:`load_splits`, the callers' checks): the model name and its builder,
that torch.fx can trace it and torch.export can export it, the data spec, a ``--dense`` checkpoint and a
rates file, a reduction goal the model cannot reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain import distributed
from ac_toolchain.config import CompressConfig
from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.cost.latency_model import conv_geometries
from ac_toolchain.data import Splits, load_dataset
from ac_toolchain.errors import CheckpointError, ConfigError, ModelError
from ac_toolchain.graph import trace
from ac_toolchain.platform import Platform, resolve_platform
from ac_toolchain.prune.spec import Spec, load_spec, uniform_spec
from ac_toolchain.runs import latest_checkpoint, load_state_dict, new_run_dir, save_checkpoint
from ac_toolchain.search.space import Space
from ac_toolchain.train import Controller, Criterion, FitSettings, cross_entropy, fit, pick_device, seed_everything
from ac_toolchain.zoo import build_model

console = Console(stderr=True)


def quiet_unless_main() -> None:
    """Under torchrun only rank 0 prints (this console and the CLI's)."""
    if not distributed.is_main():
        console.quiet = True


@dataclass
class Run:
    """What every stage shares: config, run directory, device, data and the time each stage took."""

    cfg: CompressConfig
    dir: Path
    device: torch.device  # torch's device
    splits: Splits
    platform: Platform  # compile target, bench and latency-table devices (ac_toolchain/platform.py)
    timings: dict[str, float] = field(default_factory=dict)

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
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


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


def load_model(run: Run, file: str) -> nn.Module:
    """The run's model with the state dict ``<run>/<file>`` (``dense.pt``, ``compressed.pt``), on the CPU, in eval
    mode."""
    model = build(run.cfg, run.splits.num_classes)
    load_state_dict(model, run.dir / file)
    return model.eval()


def load_splits(cfg: CompressConfig) -> Splits:
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
    return splits


def round_spec(cfg: CompressConfig, layers: list[str]) -> Spec:
    """The round's per-layer targets: ``prune.rates`` (a file) or ``prune.rate``/``prune.scheme`` everywhere."""
    if cfg.prune.rates:
        return load_spec(cfg.prune.rates, layers)
    return uniform_spec(layers, cfg.prune.rate, cfg.prune.scheme)


def check_model(cfg: CompressConfig, num_classes: int) -> None:
    """The model builds, torch.fx traces it (pruning needs that) and torch.export exports it (ONNX needs that)."""
    model = build(cfg, num_classes).eval()
    if cfg.model.checkpoint:  # --dense: there, readable, and this model's
        source = Path(cfg.model.checkpoint).expanduser()
        if not source.is_file():
            raise CheckpointError(f"--dense {source}: file not found")
        load_state_dict(model, source)
    x = example_input(cfg)
    graph = trace(model, x)
    round_spec(cfg, graph.layers)
    for objective, reduction in cfgmod.goals(cfg.search).items():  # a goal no spec can meet: say so now
        if objective == "latency":  # checked once the tables are measured (stages.LatencyTables)
            conv_geometries(model, x)  # every conv runs on the kernel the tables measure
        else:
            Space(graph, objective, called_modules(model, x)).check_reachable(reduction)
    try:
        torch.export.export(model, (x,), strict=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"torch.export cannot export {cfg.model.arch} ({first}); the ONNX export needs it — remove "
            "data-dependent control flow from the forward"
        ) from None


def open_run(cfg: CompressConfig, run_dir: Path | None = None, checks: tuple[Any, ...] = (),
             after_model: tuple[Any, ...] = ()) -> Run:  # fmt: skip
    """Validate, then create (or reopen, for resume) the run directory; nothing is written before the checks.

    The platform is resolved first (an unknown target or bench device stops here). ``checks`` are callables
    ``(cfg, platform)`` run before anything else (compile toolchain, latency device); ``after_model`` ones
    ``(cfg)`` once the data and the model are known to be good (settings of what to do with them).
    """
    platform = resolve_platform(cfg.run.target, cfg.run.bench)
    for check in checks:
        check(cfg, platform)
    seed_everything(cfg.run.seed)
    splits = load_splits(cfg)
    check_model(cfg, splits.num_classes)
    for check in after_model:
        check(cfg)
    device = distributed.init(pick_device(cfg.run.device), cfg.run.dist_timeout)
    quiet_unless_main()
    check_batch(cfg)
    if run_dir is None:
        run_dir = distributed.broadcast(_new_run(cfg) if distributed.is_main() else Path())  # rank 0 makes it
    console.print(f"run directory: [bold]{run_dir}[/]")
    seed_everything(cfg.run.seed)
    return Run(cfg, run_dir, device, splits, platform)


def _new_run(cfg: CompressConfig) -> Path:
    run_dir = new_run_dir(cfg.run.runs_dir, cfg.model.arch, cfg.run.target)
    cfgmod.save(cfg, run_dir / "config.toml")
    return run_dir


def check_batch(cfg: CompressConfig) -> None:
    """Under torchrun ``train.batch_size`` is the global batch, split evenly over the ranks."""
    ranks = distributed.world()
    if cfg.train.batch_size % ranks:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is the global batch under torchrun: it must "
                          f"divide by the {ranks} ranks (--train-batch-size)")  # fmt: skip


def checkpoint_writer(run_dir: Path, stage: str) -> Callable[[int, dict[str, Any]], None]:
    """fit's ``on_epoch_end``: the stage's checkpoint, written by rank 0 alone."""

    def checkpoint(epoch: int, state: dict[str, Any]) -> None:
        if distributed.is_main():
            save_checkpoint(run_dir, stage, epoch, state)

    return checkpoint


def train_stage(run: Run, model: nn.Module, stage: str, settings: FitSettings,
                controllers: list[Controller] | None = None, criterion: Criterion = cross_entropy) -> int:  # fmt: skip
    """Train with a checkpoint after every epoch; continues from the stage's newest checkpoint if any.
    Returns the number of epochs trained by this call."""
    resume = latest_checkpoint(run.dir, stage)
    if resume is not None:
        console.print(f"resuming {stage} after epoch {resume['epoch']}")

    losses = fit(model, run.splits.train, settings, run.device, seed=run.cfg.run.seed, controllers=controllers,
                 resume=resume, on_epoch_end=checkpoint_writer(run.dir, stage), label=stage,
                 criterion=criterion)  # fmt: skip
    return len(losses)
