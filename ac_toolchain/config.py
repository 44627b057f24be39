"""Configuration: dataclasses that map 1:1 to recipe keys (``section.field``) and CLI flags.

Resolution order, later wins: dataclass defaults < recipe (``models/<name>.toml``) < preset < CLI flags.
Every field's metadata carries its help text, its CLI flag and its valid range, so the recipe loader, the
validator and the click options are all generated from this one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from ac_toolchain.errors import ConfigError
from ac_toolchain.scheme_registry import DEFAULT_SCHEME, SCHEMES

RECIPES_DIR = Path(__file__).resolve().parent.parent / "models"
SEARCH_METHODS = ("anneal", "uniform")
GOAL_KEYS = {"search.params_x": "params", "search.flops_x": "flops", "search.latency_x": "latency"}  # -> objective
ENERGIES = ("points", "fraction")
PRUNE_METHODS = ("admm", "oneshot")
PURIFY_CRITERIA = ("paired", "tolerance")  # ac_toolchain/prune/purify.py: CRITERIA
AMP_MODES = ("off", "bf16", "fp16")  # train.amp: ac_toolchain/train.py
QUANTIZE_MODES = ("off", "int8")
CALIBRATIONS = ("minmax", "percentile", "entropy")  # ac_toolchain/quantize/ptq.py maps each to onnxruntime's


def _opt(default: Any, help: str, flag: str | None = None, **rules: Any) -> Any:
    """A config field: default, help text, optional CLI flag override and validation rules."""
    meta = {"help": help, "flag": flag, **rules}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = _opt("resnet18", "zoo name or path/to/file.py:Builder", flag="--arch")
    num_classes: int = _opt(0, "number of output classes (0 = the dataset's)", min=0)
    input_shape: tuple[int, ...] = _opt((1, 3, 32, 32), "input shape N,C,H,W (N must be 1)", flag="--input-shape")
    stem: str = _opt("auto", "ResNet/MobileNetV2 stem", choices=("auto", "cifar", "imagenet"))
    width_mult: float = _opt(1.0, "channel width multiplier of zoo models", min=0.0625, max=4.0)
    checkpoint: str = _opt("", "dense state dict to start from instead of training", flag="--dense")


@dataclass
class DataConfig:
    dataset: str = _opt("mnist-mini", "dataset spec: NAME or NAME:PATH", flag="--data")
    val_fraction: float = _opt(0.1, "fraction held out for validation", min=0.0, max=1.0, max_exclusive=True)
    test_fraction: float = _opt(0.2, "fraction held out for test", min=0.0, max=1.0, max_exclusive=True)


@dataclass
class TrainConfig:
    epochs: int = _opt(3, "dense training epochs", min=0)
    batch_size: int = _opt(64, "mini-batch size", min=1)
    lr: float = _opt(0.05, "initial SGD learning rate (cosine decay)", min=0.0, min_exclusive=True)
    momentum: float = _opt(0.9, "SGD momentum", min=0.0, max=1.0, max_exclusive=True)
    weight_decay: float = _opt(5e-4, "L2 weight decay", min=0.0)
    max_batches: int = _opt(0, "stop each epoch after this many batches (0 = all)", min=0)
    patience: int = _opt(3, "epochs without a new best validation top-1 (one that beats the best by more than "
                         "the split's binomial noise) before dense training stops; train.epochs is the cap; the "
                         "last epoch's weights are kept; 0 = train all train.epochs", min=0)  # fmt: skip
    min_above_chance: float = _opt(5.0, "the run stops after the Dense stage when the dense model's validation "
                                   "top-1 (test top-1 without a validation split) is less than this many points "
                                   "above chance (100 / classes); 0 = off", min=0.0)  # fmt: skip
    amp: str = _opt("off", "mixed precision for training on CUDA: bf16 (autocast), fp16 (autocast and a gradient "
                    "scaler) or off; anything but off on CPU is an error", choices=AMP_MODES)  # fmt: skip
    sync_bn: bool = _opt(False, "under torchrun on CUDA: BatchNorm as SyncBatchNorm while training, statistics "
                         "over the global batch (true / false); torch has it on GPUs only, so on CPU it is an "
                         "error")  # fmt: skip
    num_workers: int = _opt(0, "DataLoader worker processes for the training batches (0 = in the main process)",
                            min=0)  # fmt: skip
    pin_memory: bool = _opt(False, "page-locked host memory for the training batches, for faster copies to CUDA "
                            "(true / false); on CPU it is an error")  # fmt: skip


@dataclass
class PruneConfig:
    method: str = _opt("admm", "how the round reaches its structured targets: admm (ADMM, then hard prune) or "
                       "oneshot (hard prune at once)", choices=PRUNE_METHODS)  # fmt: skip
    rate: float = _opt(0.5, "fraction of structures removed in every prunable layer (convs and linears)",
                       min=0.0, max=1.0, max_exclusive=True)  # fmt: skip
    scheme: str = _opt(DEFAULT_SCHEME, "pruning scheme of every layer", choices=SCHEMES)
    rates: str = _opt("", 'per-layer targets, a JSON file {"layer": {"rate": R, "scheme": S}}; replaces '
                      "prune.rate and prune.scheme", flag="--prune-rates")  # fmt: skip
    finetune_epochs: int = _opt(2, "masked retraining epochs after hard pruning", min=0)
    finetune_lr: float = _opt(0.01, "masked retraining learning rate", min=0.0, min_exclusive=True)
    compact: bool = _opt(True, "retrain, purify and score proposals on the model with pruned filters and "
                         "channels physically removed (columns stay masked): the same training, faster "
                         "(true / false)")  # fmt: skip


@dataclass
class AdmmConfig:
    """The ADMM core (prune.method = admm): iterations of W-, Z- and U-steps with a rising penalty rho."""

    iterations: int = _opt(5, "ADMM iterations per round (Z- and U-steps)", min=1)
    epochs_per_iteration: int = _opt(1, "W-step epochs per ADMM iteration", min=1)
    rho_init: float = _opt(1e-2, "penalty rho of the first iteration", min=0.0, min_exclusive=True)
    rho_max: float = _opt(1.0, "penalty rho of the last iteration (geometric in between)", min=0.0,
                          min_exclusive=True)  # fmt: skip
    lr: float = _opt(0.01, "W-step learning rate (cosine over the ADMM epochs)", min=0.0, min_exclusive=True)


@dataclass
class PurifyConfig:
    """Purification after hard pruning and retraining: dead structure (exact), then redundant structure."""

    enabled: bool = _opt(True, "run purification (true / false)")
    tolerance: float = _opt(0.3, "validation accuracy (points) redundant-structure removal may lose", min=0.0)
    criterion: str = _opt("paired", "when a redundant-structure removal is kept: paired (the one-sided 95 % upper "
                          "bound of its top-1 drop, paired image by image against the model before the removals, "
                          "is within the tolerance) or tolerance (the drop itself is)", choices=PURIFY_CRITERIA)
    bn_batches: int = _opt(8, "training batches that re-estimate BatchNorm statistics after each removal", min=0)
    max_steps: int = _opt(20, "removal batches tried at most", min=0)


@dataclass
class DistillConfig:
    """Knowledge distillation from the dense model (a frozen copy) in ADMM's W-step, the masked retraining and
    the search proxy's fine-tune: loss = (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)."""

    enabled: bool = _opt(False, "distil from the dense model while training pruned models (true / false)")
    alpha: float = _opt(0.5, "weight of the distillation term (0: plain cross-entropy)", min=0.0, max=1.0)
    temperature: float = _opt(4.0, "softmax temperature of teacher and student", min=0.0, min_exclusive=True)


@dataclass
class SearchConfig:
    """Per-layer rates and schemes: simulated annealing (docs/algorithm.md, "Search") or one uniform rate."""

    method: str = _opt("anneal", "how per-layer rates are chosen: anneal (simulated annealing on a proxy) or "
                       "uniform (one rate everywhere)", flag="--search", choices=SEARCH_METHODS)  # fmt: skip
    params_x: float = _opt(0.0, "final params reduction (dense / compressed, analytic, before purification); "
                           "0: none", flag="--params-x", min=0.0)  # fmt: skip
    flops_x: float = _opt(0.0, "final FLOPs (MACs) reduction; 0: none", flag="--flops-x", min=0.0)
    latency_x: float = _opt(0.0, "final latency reduction predicted by latency tables measured first on the "
                            "bench device (--bench; auto: the target's own); 0: none", flag="--latency-x",
                            min=0.0)  # fmt: skip
    rounds: int = _opt(1, "compression rounds; round r targets reduction^(r/rounds)", flag="--search-rounds", min=1)
    proposals: int = _opt(0, "proposals per round at most (0: until t_stop)", flag="--search-proposals", min=0)
    time_budget: float = _opt(0.0, "seconds of search per round at most (0: none; cuts the same-seed replay "
                              "short where it binds)", flag="--search-time-budget", min=0.0)  # fmt: skip
    t0: float = _opt(10.0, "initial temperature, in accuracy points", min=0.0, min_exclusive=True)
    t_stop: float = _opt(0.1, "final temperature", min=0.0, min_exclusive=True)
    cooling: float = _opt(0.9, "geometric cooling factor per proposal", min=0.0, max=1.0, min_exclusive=True,
                          max_exclusive=True)  # fmt: skip
    scheme_moves: bool = _opt(True, "proposals may change one layer's scheme (filter / column / filter+column)")
    energy: str = _opt("points", "unit of the energy difference: points (ours) or fraction (NNI's 0-1, for the "
                       "ablation)", choices=ENERGIES)  # fmt: skip
    bn_batches: int = _opt(4, "training batches that re-estimate BatchNorm statistics per proposal", min=0)
    val_images: int = _opt(0, "validation images each proposal is scored on (0: the whole split)", min=0)
    proxy_steps: int = _opt(0, "masked SGD steps (lr prune.finetune_lr) that fine-tune each proposal before BN "
                            "re-estimation and scoring (0: none)", min=0)  # fmt: skip


@dataclass
class QuantizeConfig:
    """Post-training quantization of the compressed model (docs/quantize.md)."""

    mode: str = _opt("off", "quantize the compressed model after the rounds: off, or int8 (a Quantize stage: int8 "
                     "QDQ ONNX of the compact and the dense model, their accuracy, bytes and host latency)",
                     flag="--quantize", choices=QUANTIZE_MODES)  # fmt: skip
    calib_batches: int = _opt(8, "training batches (train.batch_size images each) that calibrate the activation "
                              "ranges", min=1)  # fmt: skip
    calibration: str = _opt("percentile", "activation range: minmax (observed), percentile (99.999th) or entropy "
                            "(minimal KL divergence)", choices=CALIBRATIONS)  # fmt: skip
    qat_epochs: int = _opt(0, "quantization-aware fine-tuning epochs of the compact model before it is quantized "
                           "again (a fifth model, compact int8 QAT); 0: none", min=0)  # fmt: skip
    qat_lr: float = _opt(1e-3, "quantization-aware fine-tuning learning rate (cosine)", min=0.0, min_exclusive=True)


@dataclass
class RunConfig:
    target: str = _opt("x86", "compile target", flag="--target")
    tune_trials: int = _opt(0, "MetaSchedule candidates to tune the ops TVM compiles itself (x86 only; slow: "
                            "docs/cpu-builds.md); 0: none", flag="--tune-trials", min=0)  # fmt: skip
    device: str = _opt("auto", "torch device: auto, cpu, cuda or cuda:N", flag="--device")
    seed: int = _opt(0, "random seed for splits, init and shuffling", flag="--seed", min=0)
    runs_dir: str = _opt("runs", "folder that holds run directories", flag="--runs-dir")
    bench: str = _opt("auto", "bench device after compiling: auto (the target's own, as `ac targets` lists), none, "
                      "host, qemu-arm64, callgrind, adb:<serial>", flag="--bench")  # fmt: skip
    dist_timeout: float = _opt(1800.0, "under torchrun: seconds a rank waits for the others at a collective before the "
                          "run stops with an error naming the stage", flag="--dist-timeout", min=1.0)  # fmt: skip


@dataclass
class CompressConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    admm: AdmmConfig = field(default_factory=AdmmConfig)
    purify: PurifyConfig = field(default_factory=PurifyConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "prune": PruneConfig,
    "admm": AdmmConfig, "purify": PurifyConfig, "distill": DistillConfig,
    "search": SearchConfig, "quantize": QuantizeConfig, "run": RunConfig,
}  # fmt: skip
RECIPE_META_KEYS = ("description", "default_preset", "presets")


def option_fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every (section, field) pair, in declaration order: the single source of recipe keys and CLI flags."""
    return [(s, f) for s, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)]


def flag_of(section: str, f: dataclasses.Field[Any]) -> str:
    """The CLI flag of a field: its override, or ``--section-field``."""
    return f.metadata.get("flag") or f"--{section}-{f.name}".replace("_", "-")


def key_of(section: str, f: dataclasses.Field[Any]) -> str:
    return f"{section}.{f.name}"


# ----------------------------------------------------------------------------------------------- values


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise TypeError


def _coerce(key: str, f: dataclasses.Field[Any], value: Any) -> Any:
    """Turn a TOML or CLI value into the field's type, or raise ConfigError naming the key."""
    kind = type(f.default) if f.default is not dataclasses.MISSING else tuple
    try:
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            return tuple(int(v) for v in items)
        if kind is bool:
            return _boolean(value)
        if isinstance(value, bool) and kind is not str:
            raise TypeError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} = {value!r} is not a valid {kind.__name__}") from None


def _check_range(key: str, f: dataclasses.Field[Any], value: Any) -> None:
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        raise ConfigError(f"{key} = {value!r} is not one of: {', '.join(m['choices'])}")
    if "min" in m and (value < m["min"] or (m.get("min_exclusive") and value == m["min"])):
        bound = ">" if m.get("min_exclusive") else ">="
        raise ConfigError(f"{key} = {value!r} is out of range: it must be {bound} {m['min']}")
    if "max" in m and (value > m["max"] or (m.get("max_exclusive") and value == m["max"])):
        bound = "<" if m.get("max_exclusive") else "<="
        raise ConfigError(f"{key} = {value!r} is out of range: it must be {bound} {m['max']}")


def validate(cfg: CompressConfig) -> CompressConfig:
    """Check every field's range, then the rules that span fields."""
    for section, f in option_fields():
        _check_range(key_of(section, f), f, getattr(getattr(cfg, section), f.name))
    shape = cfg.model.input_shape
    if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
        raise ConfigError(f"model.input_shape = {list(shape)} must be 1,C,H,W with positive sizes")
    _check_goals(cfg)
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        raise ConfigError("data.val_fraction + data.test_fraction must be < 1 so something is left to train")
    return cfg


def goals(search: SearchConfig) -> dict[str, float]:
    """The reduction goals set (> 0), by objective: ``{"params": 50.0}``."""
    return {obj: getattr(search, key.split(".")[1]) for key, obj in GOAL_KEYS.items()
            if getattr(search, key.split(".")[1]) > 0}  # fmt: skip


def goal_flags() -> str:
    return ", ".join(f"--{k.split('.')[1].replace('_', '-')} N" for k in GOAL_KEYS)


def _check_goals(cfg: CompressConfig) -> None:
    """At most one reduction goal, each >= 1."""
    given = goals(cfg.search)
    if len(given) > 1:
        raise ConfigError(f"set one reduction goal, not {len(given)} ({goal_flags()}; the others 0)")
    for obj, x in given.items():
        if x < 1.0:
            raise ConfigError(f"search.{obj}_x = {x}: a reduction is >= 1 (dense / compressed)")


def check_search(cfg: CompressConfig) -> None:
    """What ``ac compress`` needs of the search settings: the search needs a goal and chooses the rates."""
    if cfg.search.method == "anneal" and cfg.prune.rates:
        raise ConfigError("--prune-rates FILE fixes every layer's rate; the search chooses them itself: add "
                          "--search uniform to use the file")  # fmt: skip
    if cfg.search.method == "anneal" and not goals(cfg.search):
        raise ConfigError(f"--search anneal needs a reduction goal ({goal_flags()}); or --search uniform with "
                          "--prune-rate R / --prune-rates FILE")  # fmt: skip


def apply_overrides(cfg: CompressConfig, values: dict[str, Any], origin: str) -> None:
    """Set ``{"section.field": value}`` on cfg; unknown keys are errors that suggest the nearest key."""
    fields = {key_of(s, f): (s, f) for s, f in option_fields()}
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown key '{key}' in {origin}{hint}")
        section, f = fields[key]
        setattr(getattr(cfg, section), f.name, _coerce(key, f, value))


def flatten(table: dict[str, Any], origin: str) -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``; a bare value at the top is an error."""
    flat: dict[str, Any] = {}
    for section, body in table.items():
        if not isinstance(body, dict):
            raise ConfigError(f"unknown key '{section}' in {origin}: expected a [section] table")
        flat.update({f"{section}.{k}": v for k, v in body.items()})
    return flat


# ----------------------------------------------------------------------------------------------- recipes


def recipe_path(name: str) -> Path | None:
    """The recipe of a zoo model, a path to a .toml file, or None (a user's own model has no recipe)."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"recipe file {name} not found")
        return path
    path = RECIPES_DIR / f"{name}.toml"
    return path if path.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def preset_names(recipe: dict[str, Any]) -> list[str]:
    return sorted(recipe.get("presets", {}))


def resolve(
    model: str, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> tuple[CompressConfig, str | None]:
    """Build the config of a run: defaults < recipe < preset < overrides. Returns (config, preset used)."""
    cfg = CompressConfig()
    path = recipe_path(model)
    recipe = read_toml(path) if path else {}
    body = {k: v for k, v in recipe.items() if k not in RECIPE_META_KEYS}
    apply_overrides(cfg, flatten(body, str(path)), str(path))
    if path is None or not model.endswith(".toml"):
        cfg.model.arch = model
    preset = preset or recipe.get("default_preset")
    if preset is not None:
        presets = recipe.get("presets", {})
        if preset not in presets:
            where = f"{path}" if path else f"'{model}' (no recipe in {RECIPES_DIR})"
            raise ConfigError(
                f"unknown preset '{preset}' for {where}; presets: {', '.join(preset_names(recipe)) or 'none'}"
            )
        apply_overrides(cfg, flatten(presets[preset], f"preset '{preset}' of {path}"), f"preset '{preset}'")
    given = overrides or {}
    if given.get("prune.rates") and {"prune.rate", "prune.scheme"} & set(given):
        raise ConfigError("--prune-rates FILE sets every layer's rate and scheme; drop --prune-rate / --prune-scheme")
    _command_line_goal(cfg, given)
    apply_overrides(cfg, given, "command-line flags")
    return validate(cfg), preset


def _command_line_goal(cfg: CompressConfig, given: dict[str, Any]) -> None:
    """What the command line asks for replaces the recipe's goal: a goal flag clears the recipe's other
    goals, and ``--prune-rate`` / ``--prune-rates`` (one fixed rate or file) clear every goal."""
    fixed = {"prune.rate", "prune.rates"} & set(given)
    chosen = set(GOAL_KEYS) & set(given)
    if fixed and chosen:
        raise ConfigError(f"{', '.join(sorted(chosen))} sets a reduction goal and {', '.join(sorted(fixed))} fixes "
                          "the rates; give one")  # fmt: skip
    if fixed or chosen:
        for key in GOAL_KEYS:
            setattr(cfg.search, key.split(".")[1], 0.0)


def to_dict(cfg: CompressConfig) -> dict[str, Any]:
    """Plain dict (TOML/JSON-ready: tuples become lists)."""
    return {s: {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
            for s in SECTION_TYPES}  # fmt: skip


def save(cfg: CompressConfig, path: Path) -> None:
    """Write the resolved config as TOML; it is itself a recipe that re-runs the same job."""
    path.write_text(
        "# Resolved AutoCompress config; re-run with: ac compress THIS_FILE\n" + tomli_w.dumps(to_dict(cfg))
    )


def load(path: Path) -> CompressConfig:
    cfg = CompressConfig()
    apply_overrides(cfg, flatten(read_toml(path), str(path)), str(path))
    return validate(cfg)
