"""The ``ac`` command line: a thin layer over the Python API.

Config flags are generated from the dataclasses in config.py, so every recipe key has exactly one flag.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

from ac_toolchain import __version__, distributed
from ac_toolchain import config as cfgmod
from ac_toolchain.compile import TARGETS
from ac_toolchain.errors import USER_ERRORS, CheckpointError, ConfigError
from android_bench.device import BenchSettings

console = Console()
BENCH = BenchSettings()  # `ac bench` flag defaults: one source of truth
QUANTIZE = cfgmod.QuantizeConfig()  # `ac quantize` flag defaults
F = Callable[..., Any]


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        Console(stderr=True).print(f"[bold red]error:[/] {self.message}", highlight=False)


def handle_errors(fn: F) -> F:
    """ACError or DeviceError -> one clear line on stderr and exit code 2; Ctrl-C keeps what the run already wrote.
    Under torchrun the error also goes to torchrun's error file, and only rank 0 prints it (``ac compress
    --nproc-per-node N`` prints the first failure itself); the process group is left at the end."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise _user_error(str(exc), exc) from None
        except KeyboardInterrupt:
            raise UserError("interrupted; everything written so far is kept (continue with --resume RUN_DIR)") from None
        finally:
            distributed.shutdown()

    return wrapper


def _user_error(message: str, exc: Exception) -> click.ClickException:
    """The error of one rank: recorded for torchrun; printed by rank 0 unless our launcher prints it."""
    if not distributed.launched():
        return UserError(message)
    ErrorHandler().record_exception(exc)
    quiet = not distributed.is_main() or os.environ.get(LAUNCHER_ENV) == "1"
    return QuietUserError(message) if quiet else UserError(message)


class QuietUserError(UserError):
    def show(self, file: Any = None) -> None:
        pass


LAUNCHER_ENV = "AC_LAUNCHER"  # set by `ac compress --nproc-per-node N` for its workers


def launch(nproc: int, args: list[str], max_restarts: int = 0) -> None:
    """``ac compress ARGS`` on ``nproc`` local processes through torch.distributed.run (torchrun, standalone
    rendezvous; ``max_restarts`` restarts of the group after a failure, each resuming the run directory); the first
    failing rank's error is the one line printed, exit code 2."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)  # the failure is said once, below
    os.environ[LAUNCHER_ENV] = "1"
    argv = ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts), "--module",
            "ac_toolchain", "compress", *args]  # fmt: skip
    try:
        torchrun(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        said = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        message = re.sub(r"^\w+Error: ", "", str(said))
        raise UserError(f"{message} (rank {rank})") from None
    finally:
        os.environ.pop(LAUNCHER_ENV, None)


def _add_options(fn: F, keys: set[str] | None, aliases: dict[str, str]) -> F:
    for section, f in reversed(cfgmod.option_fields()):
        key = cfgmod.key_of(section, f)
        if keys is not None and key not in keys:
            continue
        rules = [f"one of {', '.join(f.metadata['choices'])}"] if "choices" in f.metadata else []
        default = f.default if f.default is not cfgmod.dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{f.metadata['help']} [{key}; default {shown!r}]"
        help_text += f" ({rules[0]})" if rules else ""
        names = [cfgmod.flag_of(section, f), *([aliases[key]] if key in aliases else [])]
        fn = click.option(*names, f"opt__{section}__{f.name}", default=None, help=help_text)(fn)
    return fn


def config_options(fn: F) -> F:
    """One click option per config field; values left unset do not override recipe or preset."""
    return _add_options(fn, None, {})


def some_config_options(*patterns: str, aliases: dict[str, str] | None = None) -> Callable[[F], F]:
    """Only the fields a command uses: ``"train"`` (a whole section) or ``"run.seed"`` (one key)."""
    keys = {cfgmod.key_of(s, f) for s, f in cfgmod.option_fields() if s in patterns or cfgmod.key_of(s, f) in patterns}
    return lambda fn: _add_options(fn, keys, aliases or {})


TRAIN_KEYS = ("model", "data", "train", "run.device", "run.seed", "run.runs_dir")  # what dense training reads


def overrides_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the generated options out of kwargs: ``{"train.epochs": "3", ...}`` for those given."""
    keys = [k for k in kwargs if k.startswith("opt__")]
    values = {k.removeprefix("opt__").replace("__", "."): kwargs.pop(k) for k in keys}
    return {k: v for k, v in values.items() if v is not None}


def resolve(model: str, preset: str | None, kwargs: dict[str, Any]) -> cfgmod.CompressConfig:
    cfg, used = cfgmod.resolve(model, preset, overrides_from(kwargs))
    console.print(f"model [bold]{cfg.model.arch}[/], preset [bold]{used or 'none'}[/], data {cfg.data.dataset}")
    check_training_device(cfg)
    return cfg


def check_training_device(cfg: cfgmod.CompressConfig) -> None:
    """``train.amp``, ``train.sync_bn`` and ``train.pin_memory`` need CUDA: refused before any work otherwise."""
    from ac_toolchain.train import check_device_options, pick_device

    check_device_options(cfg.train, pick_device(cfg.run.device))


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
@click.option("--nproc-per-node", "nproc", type=click.IntRange(min=1),
              help="run on N local processes (torchrun --standalone; docs/distributed.md): every training loop "
              "data-parallel, rank 0 writes the run directory")  # fmt: skip
@click.option("--max-restarts", "max_restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="with --nproc-per-node: times torchrun restarts the processes after one fails (a killed worker); "
              "each restart resumes the run directory from its newest checkpoint")  # fmt: skip
@config_options
@handle_errors
def compress(model: str | None, preset: str | None, resume: Path | None, nproc: int | None, max_restarts: int,
             **kwargs: Any) -> None:  # fmt: skip
    """Compress MODEL (zoo name, recipe .toml, or file.py:Builder) and report the result.

    Trains (or loads with --dense) the dense model, then runs --search-rounds rounds toward the final
    --params-x N (or --flops-x N) reduction: simulated annealing picks every layer's rate and scheme on a
    quick proxy (one-shot projection, BatchNorm re-estimated, validation top-1), ADMM pulls the weights onto
    the best spec, hard pruning fixes the masks, masked retraining recovers accuracy and purification removes
    dead and redundant structure. Then the compact model is exported to ONNX, compiled with TVM for --target
    and benched; report.json / report.md land in a new run directory. --search uniform uses one rate (the one
    meeting the target, or --prune-rate R / --prune-rates FILE); --prune-method oneshot skips ADMM.
    """
    from ac_toolchain.compress import compress as run_compress

    console.quiet = not distributed.is_main()  # under torchrun rank 0 alone prints
    if max_restarts and not nproc:
        raise ConfigError("--max-restarts restarts the processes of --nproc-per-node N; give both (under torchrun: "
                          "torchrun --max-restarts K)")  # fmt: skip
    if resume is not None:
        if model or preset or overrides_from(kwargs):
            raise ConfigError("--resume continues a run with its saved config.toml; give no MODEL, preset or flags")
        if not (resume / "config.toml").is_file():
            raise CheckpointError(f"{resume} is not a run directory (no config.toml); pass the folder under runs/")
        cfg = cfgmod.load(resume / "config.toml")
        check_training_device(cfg)
        if nproc and not distributed.launched():
            return launch(nproc, ["--resume", str(resume)], max_restarts)
        run_compress(cfg, run_dir=resume)
        return
    if model is None:
        raise ConfigError("give a MODEL (e.g. `ac compress resnet18`) or --resume RUN_DIR")
    cfg = resolve(model, preset, kwargs)  # a bad flag stops here, before any process starts
    if nproc and not distributed.launched():
        return _launch_config(nproc, cfg, max_restarts)
    earlier = distributed.earlier_run(Path(cfg.run.runs_dir), functools.partial(_saved_config_is, cfg))
    if earlier is not None:  # torchrun restarted the group (--max-restarts): resume what the last attempt wrote
        console.print(f"torchrun restart {distributed.restarts()}: resuming {earlier}")
    run_compress(cfg, run_dir=earlier)


def _saved_config_is(cfg: cfgmod.CompressConfig, run_dir: Path) -> bool:
    try:
        return cfgmod.load(run_dir / "config.toml") == cfg
    except USER_ERRORS:  # a run directory of another version: not this launch's
        return False


def _launch_config(nproc: int, cfg: cfgmod.CompressConfig, max_restarts: int) -> None:
    """The resolved config goes to the workers as a recipe file (config.toml re-runs the same job)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        cfgmod.save(cfg, path)
        launch(nproc, [str(path)], max_restarts)


@main.command(epilog="Example:  ac train lenet5 --train-epochs 5")
@click.argument("model")
@click.option("--preset", help="recipe preset; default: the recipe's default_preset")
@some_config_options(*TRAIN_KEYS)
@handle_errors
def train(model: str, preset: str | None, **kwargs: Any) -> None:
    """Train MODEL densely; writes dense.pt and report-free results into a new run directory."""
    from ac_toolchain.context import open_run
    from ac_toolchain.pipeline import measure, new_state, pipeline, run_stages, until
    from ac_toolchain.pipeline.rounds import Dense
    from ac_toolchain.runs import atomic_write_text

    run = open_run(resolve(model, preset, kwargs))
    state = run_stages(run, until(pipeline(run), Dense), new_state(run))
    results = {"dense": asdict(measure(run, state.model, "dense")), "timings": run.timings}
    atomic_write_text(json.dumps(results, indent=2) + "\n", run.dir / "train.json")
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
    from ac_toolchain.context import build, open_run
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


def _model_and_config(model_or_checkpoint: str, overrides: dict[str, Any]) -> tuple[Any, cfgmod.CompressConfig]:
    """A zoo / recipe / file model (fresh weights), or a .pt checkpoint inside a run directory (its config,
    with ``overrides`` — ``{"section.field": value}`` — applied)."""
    from ac_toolchain.context import build
    from ac_toolchain.runs import load_state_dict

    path = Path(model_or_checkpoint)
    is_ckpt = path.suffix == ".pt"
    if is_ckpt:
        cfg = _config_beside(path)
        cfgmod.apply_overrides(cfg, overrides, "command-line flags")
        cfgmod.validate(cfg)
    else:
        cfg = cfgmod.resolve(model_or_checkpoint, None, overrides)[0]
    model = build(cfg, cfg.model.num_classes or 10)
    if is_ckpt:
        load_state_dict(model, path)
    return model.eval(), cfg


def _print_counts(title: str, rows: dict[str, dict[str, int]]) -> None:
    table = Table(title=title)
    for col in ("", "params", "FLOPs (MACs)"):
        table.add_column(col, justify="right")
    for name, c in rows.items():
        table.add_row(name, f"{c['params']:,}", f"{c['flops']:,}")
    console.print(table)


@main.command(name="count", epilog="Examples:\n\n  ac count resnet18\n\n  ac count resnet50 --input-shape 1,3,224,224 "
              "--model-num-classes 1000\n\n  ac count runs/lenet5-x86-20261124-101500/compressed.pt")  # fmt: skip
@click.argument("model_or_checkpoint")
@some_config_options("model")
@handle_errors
def count_cmd(model_or_checkpoint: str, **kwargs: Any) -> None:
    """Params and FLOPs (MACs) of a zoo model, or of a checkpoint's non-zero structure."""
    import torch

    from ac_toolchain.count import count

    model, cfg = _model_and_config(model_or_checkpoint, overrides_from(kwargs))
    shape = "x".join(map(str, cfg.model.input_shape))
    _print_counts(f"{cfg.model.arch} {shape}", {"model": count(model, torch.randn(*cfg.model.input_shape))})


# the keys only --method admm reads
ROUND_KEYS = ("admm", "purify", "distill", "train", "data", "prune.finetune_epochs", "prune.finetune_lr")
PRUNE_ALIASES = {"prune.rate": "--rate", "prune.scheme": "--scheme", "prune.method": "--method",
                 "prune.rates": "--rates"}  # fmt: skip


@main.command(epilog="Examples:\n\n  ac prune resnet18 --rate 0.8 --scheme filter+column --out pruned.pt"
              "\n\n  ac prune runs/resnet18-x86-20261124-101500/dense.pt --rate 0.5"
              "\n\n  ac prune runs/lenet5-x86-20261124-101500/dense.pt --method admm --rate 0.9"
              "\n\n  ac prune resnet18 --explain")  # fmt: skip
@click.argument("model_or_checkpoint")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="where to save the pruned state dict")
@click.option("--explain", is_flag=True, help="prune nothing: list what each scheme can prune per layer, and why not")
@some_config_options("model", "prune", *ROUND_KEYS, "run.device", "run.seed", "run.runs_dir", aliases=PRUNE_ALIASES)
@handle_errors
def prune(model_or_checkpoint: str, out: Path | None, explain: bool, **kwargs: Any) -> None:
    """Structured pruning of every conv and linear layer (or per --rates FILE); saves the masked state dict.

    --method oneshot (the default here) projects the weights at once (L2 norm, exact kept counts): no data,
    no training. --method admm runs a whole round on a dense checkpoint inside a run directory: ADMM, hard
    prune + masked retraining, purification (the ADMM / purify / train flags apply then), in a new run
    directory."""
    overrides = overrides_from(kwargs)
    if explain:
        unused = ([] if out is None else ["--out"]) + sorted(
            f"the option setting {k}" for k in overrides if k.split(".")[0] not in ("model", "run"))  # fmt: skip
        if unused:
            raise click.UsageError(f"--explain prunes and saves nothing: drop {', '.join(unused)}")
        return _explain(model_or_checkpoint, overrides)
    overrides.setdefault("prune.method", "oneshot")
    if overrides["prune.method"] == "oneshot":
        extra = sorted(k for k in overrides if k.split(".")[0] in ("admm", "purify", "distill", "train", "data")
                       or k in ROUND_KEYS)  # fmt: skip
        if extra:
            raise ConfigError(f"{', '.join(extra)} apply only with --method admm (one-shot pruning does not train)")
        return _prune_oneshot(model_or_checkpoint, out, overrides)
    return _prune_round(model_or_checkpoint, out, overrides)


def _prune_oneshot(model_or_checkpoint: str, out: Path | None, overrides: dict[str, Any]) -> None:
    import torch

    from ac_toolchain.context import round_spec
    from ac_toolchain.count import count
    from ac_toolchain.graph import trace
    from ac_toolchain.prune.schemes import apply_masks, project
    from ac_toolchain.prune.spec import rates_and_schemes
    from ac_toolchain.runs import atomic_save

    model, cfg = _model_and_config(model_or_checkpoint, overrides)
    x = torch.randn(*cfg.model.input_shape)
    before = count(model, x)
    graph = trace(model, x)
    masks, plan = project(graph, *rates_and_schemes(round_spec(cfg, graph.layers)), {})
    apply_masks(model, masks)
    _print_plan(plan, cfg.prune.rates or f"{cfg.prune.scheme} at {cfg.prune.rate}")
    _print_counts("structure", {"dense": before, "pruned": count(model, x)})
    if out is not None:
        atomic_save(model.state_dict(), out)
        console.print(f"pruned state dict: {out}")


def _explain(model_or_checkpoint: str, overrides: dict[str, Any]) -> None:
    """``ac prune --explain``: the coverage report (ac_toolchain/coverage.py), nothing pruned."""
    import torch

    from ac_toolchain.coverage import coverage_table, explain

    model, cfg = _model_and_config(model_or_checkpoint, overrides)
    rows = explain(model, torch.randn(*cfg.model.input_shape))
    shape = "x".join(map(str, cfg.model.input_shape))
    console.print(coverage_table(rows, title=f"{cfg.model.arch} {shape}: what each scheme can prune"))


def _print_plan(plan: Any, title: str) -> None:
    table = Table(title=title)
    for col in ("layer", "scheme", "rate", "filter groups kept", "columns kept", "coupled to"):
        table.add_column(col)
    for e in plan.layers:
        groups = f"{e.groups_kept}/{e.groups_total}" if e.groups_total else "—"
        cols = f"{e.columns_kept}/{e.columns_total}" if e.columns_total else "—"
        table.add_row(e.name, e.scheme, f"{e.rate:g}", groups, cols, e.coupled_to)
    console.print(table)
    for reason in plan.graph.frozen_reasons.values():
        console.print(f"kept whole: {reason}")


def _prune_round(checkpoint: str, out: Path | None, overrides: dict[str, Any]) -> None:
    """ADMM -> hard prune + retrain -> purify on a dense checkpoint, in a new run directory."""
    from ac_toolchain.context import open_run
    from ac_toolchain.pipeline import measure, new_state, pipeline, run_stages, until
    from ac_toolchain.pipeline.finish import round_parts
    from ac_toolchain.pipeline.rounds import RoundStage
    from ac_toolchain.runs import atomic_save, atomic_write_text

    path = Path(checkpoint)
    if path.suffix != ".pt":
        raise ConfigError("--method admm prunes a trained dense checkpoint: give a .pt inside a run directory "
                          "(`ac train MODEL` makes one)")  # fmt: skip
    cfg = _config_beside(path)
    fixed = {"search.method": "uniform", "search.rounds": 1, **{k: 0.0 for k in cfgmod.GOAL_KEYS}}  # given rates
    cfgmod.apply_overrides(cfg, {**overrides, **fixed, "model.checkpoint": str(path)}, "command-line flags")
    cfg = cfgmod.validate(cfg)
    check_training_device(cfg)
    run = open_run(cfg)
    state = run_stages(run, until(pipeline(run), RoundStage), new_state(run))
    parts = {k: _plain(v) for k, v in round_parts(state).items()}
    results = {**parts, "compressed": asdict(measure(run, state.model, "compressed")), "timings": run.timings}
    atomic_save(state.model.state_dict(), run.dir / "compressed.pt")
    atomic_write_text(json.dumps(results, indent=2) + "\n", run.dir / "prune.json")
    if out is not None:
        atomic_save(state.model.state_dict(), out)
    console.print(f"pruned model: {out or run.dir / 'compressed.pt'} (round record: {run.dir / 'prune.json'})")


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses (in lists and dicts too) as dicts."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@main.command(epilog="Example:  ac compact runs/resnet18-x86-20261124-101500/compressed.pt --out compact.pt2")
@click.argument("checkpoint")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="save the compact model (torch.export)")
@handle_errors
def compact(checkpoint: str, out: Path | None) -> None:
    """Physically remove the zeroed structures of CHECKPOINT; prints the compact model and checks equivalence."""
    import torch

    from ac_toolchain.compact import compact as make_compact
    from ac_toolchain.count import count

    model, cfg = _model_and_config(checkpoint, {})
    x = torch.randn(*cfg.model.input_shape)
    small = make_compact(model, x).eval()
    with torch.no_grad():
        diff = float((small(x) - model(x)).abs().max())
    console.print(small)
    _print_counts("structure", {"masked": count(model, x), "compact": count(small, x)})
    console.print(f"max |compact - masked| on a random input: {diff:.2e}")
    if out is not None:
        torch.export.save(torch.export.export(small, (x,)), str(out))
        console.print(f"compact model (torch.export program, load with torch.export.load): {out}")


@main.command(epilog="Example:  ac export runs/resnet18-x86-20261124-101500/compressed.pt --out model.onnx")
@click.argument("checkpoint")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.onnx"), show_default=True)
@click.option(
    "--zero-columns", is_flag=True,
    help="write column-pruned convs as plain Conv with zero columns (the form `ac compile` runs fastest)",
)  # fmt: skip
@handle_errors
def export(checkpoint: str, out: Path, zero_columns: bool) -> None:
    """Compact CHECKPOINT and export it to ONNX; checks onnx.checker and onnxruntime against torch."""
    import torch

    from ac_toolchain.compact import compact as make_compact
    from ac_toolchain.compact import expand_columns
    from ac_toolchain.export import check_with_onnxruntime, export_onnx

    model, cfg = _model_and_config(checkpoint, {})
    x = torch.randn(*cfg.model.input_shape)
    small = make_compact(model, x).eval()
    path = export_onnx(expand_columns(small) if zero_columns else small, x, out)
    console.print(f"{path}: onnxruntime vs torch max abs difference {check_with_onnxruntime(path, model, x):.2e}")


@main.command(
    name="compile",
    epilog="Examples:\n\n  ac compile runs/resnet18-x86-20261124-101500 --target arm64"
    "\n\n  ac compile model.onnx --target opencl",
)
@click.argument("run_or_onnx", type=click.Path(exists=True, path_type=Path))
@click.option("--target", required=True, type=click.Choice(list(TARGETS)), help="compile target")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="output folder (default: beside the ONNX)"
)
@click.option(
    "--tune-trials", default=0, show_default=True, type=click.IntRange(min=0),
    help="MetaSchedule candidates to tune the ops TVM compiles itself (x86 only; slow: docs/cpu-builds.md); "
    "the log stays in <out>/tuning/ and later builds apply it",
)  # fmt: skip
@handle_errors
def compile_cmd(run_or_onnx: Path, target: str, out: Path | None, tune_trials: int) -> None:
    """Compile a run's model (or any ONNX file) with TVM into <run>/<target>/ with a manifest.

    Convolutions run on the kernels/ compact-conv kernel; all-zero weight columns (pruned columns) are skipped."""
    from ac_toolchain.compile import get_target
    from ac_toolchain.compile.tvm_build import TVM_ONNX, compile_onnx

    onnx_path = run_or_onnx
    if run_or_onnx.is_dir():
        onnx_path = next((run_or_onnx / n for n in (TVM_ONNX, "model.onnx") if (run_or_onnx / n).is_file()),
                         run_or_onnx / TVM_ONNX)  # fmt: skip
    if not onnx_path.is_file():
        raise CheckpointError(f"{run_or_onnx} has no {TVM_ONNX} or model.onnx; run `ac compress` or `ac export` first")
    out_dir = out or onnx_path.parent / target
    manifest = compile_onnx(onnx_path, get_target(target), out_dir, tune_trials)
    for name, info in manifest["files"].items():
        console.print(f"{out_dir / name}  {info['bytes']:,} bytes  sha256 {info['sha256'][:16]}…")
    if manifest["tuning"]:
        console.print(f"tuning log: {manifest['tuning']['dir']} ({manifest['tuning']['seconds']:.0f} s of tuning)")
    console.print(f"manifest: {out_dir / 'manifest.json'} (built in {manifest['build_seconds']:.1f} s)")


@main.command(
    epilog="Examples:\n\n  ac bench runs/resnet18-arm64-20261124-101500 --bench qemu-arm64"
    "\n\n  ac bench RUN --bench adb:R58M123ABC --runs 100 --cleanup"
    "\n\n  ac bench RUN --bench callgrind"
    "\n\n  ac bench RUN --bench qemu-arm64 --check benchmarks/baselines/lenet5-smoke-qemu-arm64.json --tolerance 0.02",
)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--bench",
    "device",
    default="host",
    show_default=True,
    help="bench device, as in `ac compress --bench` (--device is always torch's device): host, qemu-arm64 "
    "(aarch64 instruction counts), callgrind (x86 instruction counts, valgrind), "
    "adb:<serial> or adb (the only attached phone)",
)
@click.option("--warmup", type=click.IntRange(0), default=BENCH.warmup, show_default=True, help="untimed runs first")
@click.option(
    "--runs", type=click.IntRange(1), default=BENCH.runs, show_default=True, help="at least this many timed runs"
)
@click.option(
    "--min-seconds",
    type=click.FloatRange(0),
    default=BENCH.min_seconds,
    show_default=True,
    help="... and at least this much timed wall-clock",
)
@click.option(
    "--threads",
    type=click.IntRange(0),
    default=BENCH.threads,
    show_default=True,
    help="0: every big core (phone) / every core (host); qemu always runs one",
)
@click.option(
    "--cooldown",
    "cooldown_s",
    type=click.FloatRange(0),
    default=BENCH.cooldown_s,
    show_default=True,
    help="seconds a phone rests between the two models",
)
@click.option("--seed", type=int, default=BENCH.seed, show_default=True, help="seed of the random input")
@click.option("--check", type=click.Path(path_type=Path), help="baseline JSON: fail when a model got slower")
@click.option(
    "--tolerance",
    type=click.FloatRange(0),
    default=0.02,
    show_default=True,
    help="allowed growth over the baseline (0.02 = 2 %)",
)
@click.option(
    "--save-baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write this bench as a baseline for later --check (an existing file only with --force)",
)
@click.option(
    "--force",
    is_flag=True,
    help="let --save-baseline replace an existing baseline; the old figures stay in the file's history",
)
@click.option("--cleanup", is_flag=True, help="remove the pushed files from the phone afterwards")
@click.option(
    "--profile-layers",
    is_flag=True,
    help="instead: measure the latency tables of the run's model (a grid of kept filters x input channels x rows "
    "per conv, on the kernel alone; cached); writes <run>/latency/<device>.json",
)
@handle_errors
def bench(run_dir: Path, device: str, check: Path | None, tolerance: float, save_baseline: Path | None,
          force: bool, cleanup: bool, profile_layers: bool, **settings: Any) -> None:  # fmt: skip
    """Measure a run's dense and compressed models on a device; write <run>/bench/<device>.json.

    Both models are built as static runners for the device (cached in <run>/bench/artifacts/). Phones and the
    host report latency samples (min / median / mean / std / p5 / p95); qemu-arm64 reports deterministic
    instruction counts and checks the outputs against torch."""
    from ac_toolchain.bench_run import bench_run
    from android_bench.bench import speedup_table
    from android_bench.devices import check_name

    check_name(device)  # an unknown device name is the first thing said
    console.print(f"benchmarking {run_dir} on [bold]{device}[/] (building runners on first use: a few minutes)")
    if profile_layers:
        return _print_layers(run_dir, device)
    result = bench_run(run_dir, device, BenchSettings(**settings), check, tolerance, save_baseline, cleanup,
                       force)
    console.print(speedup_table(result))
    console.print(f"speed-up dense → compressed: [bold]{result['speedup']}×[/] ({result['metric']})")
    if "max_abs_diff" in result["output_check"]:
        console.print(f"outputs vs torch: max abs difference {result['output_check']['max_abs_diff']:.2e}")
    if "gate" in result:
        console.print(f"[green]gate passed[/] against {check} (tolerance {tolerance:.1%})")


def _print_layers(run_dir: Path, device: str) -> None:
    from ac_toolchain.latency_tables import profile_run

    result = profile_run(run_dir, device)
    digits = ",.0f" if result["metric"] == "instructions" else ",.1f"
    view = Table("layer", "input", "filters", "kernel", "stride", "cells", f"dense ({result['unit']})")
    for r in result["layers"]:
        view.add_row(r["layer"], f"{r['c']}×{r['h']}×{r['w']}", str(r["f"]), f"{r['kh']}×{r['kw']}",
                     f"{r['sh']}×{r['sw']}", str(r["cells"]), format(r["dense"], digits))  # fmt: skip
    console.print(view)
    console.print(
        f"dense model: measured {result['dense_measured']:{digits}}, predicted {result['dense_predicted']:{digits}}"
    )
    if "predicted_speedup" in result:
        console.print(f"compressed model: predicted {result['compressed_predicted']:{digits}} "
                      f"([bold]{result['predicted_speedup']}×[/] speed-up)")  # fmt: skip
    console.print(f"tables: {result['tables']}")


@main.command(name="quantize", epilog="Example:  ac quantize runs/lenet5-x86-20261124-101500 --calibration minmax")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--calib-batches", default=QUANTIZE.calib_batches, show_default=True, type=click.IntRange(min=1),
              help="training batches (train.batch_size images each) that calibrate the activation ranges")  # fmt: skip
@click.option("--calibration", default=QUANTIZE.calibration, show_default=True,
              type=click.Choice(cfgmod.CALIBRATIONS),
              help="activation range: observed min/max, the 99.999th percentile, or minimal KL divergence")  # fmt: skip
@click.option("--qat-epochs", default=QUANTIZE.qat_epochs, show_default=True, type=click.IntRange(min=0),
              help="quantization-aware fine-tuning epochs of the compact model (a fifth model; 0: none)")  # fmt: skip
@click.option("--qat-lr", default=QUANTIZE.qat_lr, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="quantization-aware fine-tuning learning rate")  # fmt: skip
@handle_errors
def quantize_cmd(run_dir: Path, calib_batches: int, calibration: str, qat_epochs: int, qat_lr: float) -> None:
    """Post-training int8 quantization of a finished run (onnxruntime's quantize_static, QDQ ONNX): int8
    per-channel weights, per-tensor activations, BN folded; the dense and the compact model, each in fp32 and
    int8, compared. Writes <run>/int8/ and records/quantize.json, and adds an int8 section to the report."""
    from ac_toolchain.quantize import quantize_run

    rec = quantize_run(run_dir, cfgmod.QuantizeConfig("int8", calib_batches, calibration, qat_epochs, qat_lr))
    view = Table("model", "top-1", "bytes", "host ms / image", title=f"int8 ({rec.method}, {rec.calib_batches} "
                 f"calibration batches; {rec.test_images} test images; onnxruntime, 1 thread)")  # fmt: skip
    for name, v in rec.variants.items():
        view.add_row(name, f"{v.top1:.2%}", f"{v.bytes:,}", f"{v.host_ms:.3f}")
    console.print(view)
    console.print(f"compact fp32 bytes ÷ compact int8 bytes: {rec.size_ratio}×; {rec.variants['compact int8'].path}")


@main.command(name="targets", epilog="Example:  ac targets")
def targets_cmd() -> None:
    """The platform table: each compile target, the device that benches it, where its outputs are checked."""
    from ac_toolchain.platform import PLATFORMS

    # two tables with the same rows, so that each fits a narrow terminal: what the target is, then where it runs
    what = Table("target", "description", "cross compiler", title="compile targets")
    where = Table("target", "--bench auto", "output check here", "latency tables",
                  title="where each runs (ac_toolchain/platform.py)")  # fmt: skip
    for name, row in PLATFORMS.items():
        what.add_row(name, row.target.description, row.target.cross_compiler or "- (host)")
        bench = row.auto_bench or "none"  # with --bench auto the latency tables are measured on the bench device
        where.add_row(name, bench, "yes" if row.check_here else "no", bench)
    for table in (what, where):
        table.columns[0].no_wrap = True
        console.print(table)


if __name__ == "__main__":
    main()
