"""The ``ac`` command line: a thin layer over the Python API.

Config flags are generated from the dataclasses in config.py, so every recipe key has exactly one flag.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ac_toolchain import __version__
from ac_toolchain import config as cfgmod
from ac_toolchain.compile import TARGETS
from ac_toolchain.errors import ACError, CheckpointError, ConfigError

console = Console()
F = Callable[..., Any]


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        Console(stderr=True).print(f"[bold red]error:[/] {self.message}", highlight=False)


def handle_errors(fn: F) -> F:
    """ACError -> one clear line on stderr and exit code 2; Ctrl-C keeps what the run already wrote."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ACError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            raise UserError("interrupted; everything written so far is kept (continue with --resume RUN_DIR)") from None

    return wrapper


def config_options(fn: F) -> F:
    """One click option per config field; values left unset do not override recipe or preset."""
    for section, f in reversed(cfgmod.option_fields()):
        rules = [f"one of {', '.join(f.metadata['choices'])}"] if "choices" in f.metadata else []
        default = f.default if f.default is not cfgmod.dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{f.metadata['help']} [{cfgmod.key_of(section, f)}; default {shown!r}]"
        help_text += f" ({rules[0]})" if rules else ""
        fn = click.option(cfgmod.flag_of(section, f), f"opt__{section}__{f.name}", default=None,
                          help=help_text)(fn)  # fmt: skip
    return fn


def overrides_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the generated options out of kwargs: ``{"train.epochs": "3", ...}`` for those given."""
    keys = [k for k in kwargs if k.startswith("opt__")]
    values = {k.removeprefix("opt__").replace("__", "."): kwargs.pop(k) for k in keys}
    return {k: v for k, v in values.items() if v is not None}


def resolve(model: str, preset: str | None, kwargs: dict[str, Any]) -> cfgmod.CompressConfig:
    cfg, used = cfgmod.resolve(model, preset, overrides_from(kwargs))
    console.print(f"model [bold]{cfg.model.arch}[/], preset [bold]{used or 'none'}[/], data {cfg.data.dataset}")
    return cfg


@click.group(epilog="Example:  ac compress resnet18 --target arm64")
@click.version_option(__version__, prog_name="ac")
def main() -> None:
    """AutoCompress: prune a CNN, shrink it physically, compile it for a phone, measure the speed-up."""


@main.command(epilog="Examples:\n\n  ac compress resnet18 --target arm64\n\n  ac compress lenet5 --preset smoke"
              "\n\n  ac compress my_net.py:build --input-shape 1,3,32,32 --data cifar10:~/cifar"
              "\n\n  ac compress --resume runs/resnet18-arm64-20261124-101500")  # fmt: skip
@click.argument("model", required=False)
@click.option("--preset", help="recipe preset (smoke, cpu, paper, ...); default: the recipe's default_preset")
@click.option("--resume", "resume", type=click.Path(file_okay=False, path_type=Path),
              help="continue an interrupted run directory from its newest checkpoint")  # fmt: skip
@config_options
@handle_errors
def compress(model: str | None, preset: str | None, resume: Path | None, **kwargs: Any) -> None:
    """Compress MODEL (zoo name, recipe .toml, or file.py:Builder) and report the result.

    Trains (or loads with --dense) the dense model, prunes every conv's filters uniformly by L1 norm,
    fine-tunes with masks, exports ONNX and writes report.json / report.md into a new run directory.
    """
    from ac_toolchain.compress import compress as run_compress

    if resume is not None:
        if model or preset or overrides_from(kwargs):
            raise ConfigError("--resume continues a run with its saved config.toml; give no MODEL, preset or flags")
        if not (resume / "config.toml").is_file():
            raise CheckpointError(f"{resume} is not a run directory (no config.toml); pass the folder under runs/")
        run_compress(cfgmod.load(resume / "config.toml"), run_dir=resume)
        return
    if model is None:
        raise ConfigError("give a MODEL (e.g. `ac compress resnet18`) or --resume RUN_DIR")
    run_compress(resolve(model, preset, kwargs))


@main.command(epilog="Example:  ac train lenet5 --train-epochs 5")
@click.argument("model")
@click.option("--preset", help="recipe preset; default: the recipe's default_preset")
@config_options
@handle_errors
def train(model: str, preset: str | None, **kwargs: Any) -> None:
    """Train MODEL densely; writes dense.pt and report-free results into a new run directory."""
    from ac_toolchain.compress import dense_model, measure, open_run

    run = open_run(resolve(model, preset, kwargs))
    with run.stage("dense"):
        net = dense_model(run)
    measure(run, net, "dense")
    (run.dir / "train.json").write_text(json.dumps({**run.results, "timings": run.timings}, indent=2) + "\n")
    console.print(f"dense model: {run.dir / 'dense.pt'}")


def _config_beside(checkpoint: Path) -> cfgmod.CompressConfig:
    path = checkpoint.parent / "config.toml"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: no config.toml beside it; pass a checkpoint inside a run directory")
    return cfgmod.load(path)


@main.command(name="eval", epilog="Example:  ac eval runs/lenet5-x86-20261124-101500/compressed.pt")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", help="evaluate on another dataset spec instead of the run's")
@handle_errors
def eval_cmd(checkpoint: Path, data: str | None) -> None:
    """Top-1 accuracy of CHECKPOINT (a .pt in a run directory) on the test split."""
    from ac_toolchain.compress import build, open_run
    from ac_toolchain.count import count
    from ac_toolchain.runs import load_state_dict
    from ac_toolchain.train import evaluate, make_loader

    cfg = _config_beside(checkpoint)
    cfg.data.dataset = data or cfg.data.dataset
    run = open_run(cfg, run_dir=checkpoint.parent)
    model = build(cfg, run.splits.num_classes)
    load_state_dict(model, checkpoint)
    acc = evaluate(model.to(run.device), make_loader(run.splits.test, 256, shuffle=False), run.device)
    counts = count(model.cpu(), run.example)
    console.print_json(json.dumps({"checkpoint": str(checkpoint), "dataset": run.splits.name,
                                   "accuracy": round(acc, 6), **counts}))  # fmt: skip


@main.command(name="count", epilog="Examples:\n\n  ac count resnet18\n\n  ac count resnet50 --input-shape 1,3,224,224 "
              "--model-num-classes 1000\n\n  ac count runs/lenet5-x86-20261124-101500/compressed.pt")  # fmt: skip
@click.argument("model_or_checkpoint")
@config_options
@handle_errors
def count_cmd(model_or_checkpoint: str, **kwargs: Any) -> None:
    """Params and FLOPs (MACs) of a zoo model, or of a checkpoint's non-zero structure."""
    from ac_toolchain.compress import build
    from ac_toolchain.count import count
    from ac_toolchain.runs import load_state_dict

    path = Path(model_or_checkpoint)
    is_ckpt = path.suffix == ".pt"
    cfg = _config_beside(path) if is_ckpt else cfgmod.resolve(model_or_checkpoint, None, overrides_from(kwargs))[0]
    model = build(cfg, cfg.model.num_classes or 10)
    if is_ckpt:
        load_state_dict(model, path)
    import torch

    counts = count(model, torch.randn(*cfg.model.input_shape))
    table = Table(title=f"{cfg.model.arch} {'x'.join(map(str, cfg.model.input_shape))}")
    table.add_column("params", justify="right")
    table.add_column("FLOPs (MACs)", justify="right")
    table.add_row(f"{counts['params']:,}", f"{counts['flops']:,}")
    console.print(table)


@main.command(name="targets", epilog="Example:  ac targets")
def targets_cmd() -> None:
    """List compile targets."""
    for t in TARGETS.values():
        console.print(f"[bold]{t.name:14}[/] {t.description}")


if __name__ == "__main__":
    main()
