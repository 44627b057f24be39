"""Model registry: zoo names -> builders, plus ``path/to/file.py:Builder`` for a user's own model.

Every builder has the signature ``(num_classes, in_channels, input_size, **options) -> nn.Module``.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ac_toolchain.errors import ModelError

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        MODELS[name] = fn
        return fn

    return wrap


def model_names() -> list[str]:
    return sorted(MODELS)


def _check_options(name: str, fn: Builder, options: dict[str, Any]) -> None:
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("num_classes", "in_channels", "input_size")]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ModelError(f"{name} has no option {unknown[0]!r}; its options: {', '.join(accepted) or 'none'}")


def _load_user_builder(spec: str) -> Builder:
    path_text, _, attr = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {path} not found (expected path/to/file.py:BuilderName)")
    module_spec = importlib.util.spec_from_file_location(f"ac_user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ModelError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{path} has no callable {attr!r}; pass path/to/file.py:BuilderName")
    return fn


def _call_user_builder(spec: str, fn: Builder, args: dict[str, Any], options: dict[str, Any]) -> nn.Module:
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in {**args, **options}.items() if takes_any or k in params}
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelError(f"{spec} failed to build: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(
    spec: str, *, num_classes: int, in_channels: int, input_size: tuple[int, int], **options: Any
) -> nn.Module:
    """Build a zoo model by name, or a user's model from ``path/to/file.py:Builder``."""
    if num_classes < 1 or in_channels < 1 or min(input_size) < 1:
        raise ModelError(
            f"{spec}: num_classes ({num_classes}), in_channels ({in_channels}) and input size {input_size} "
            "must be positive"
        )
    args = {"num_classes": num_classes, "in_channels": in_channels, "input_size": tuple(input_size)}
    if spec.endswith(".py") or ".py:" in spec:
        if ":" not in spec:
            raise ModelError(f"{spec}: name the builder too, as path/to/file.py:BuilderName")
        return _call_user_builder(spec, _load_user_builder(spec), args, options)
    if spec not in MODELS:
        raise ModelError(
            f"unknown model {spec!r}; zoo models: {', '.join(model_names())}, or your own as path/to/file.py:Builder"
        )
    _check_options(spec, MODELS[spec], options)
    return MODELS[spec](**args, **options)


def check_stem(stem: str, input_size: tuple[int, int]) -> str:
    """Resolve ``auto`` (CIFAR stem below 96 px) and validate."""
    if stem == "auto":
        return "cifar" if min(input_size) < 96 else "imagenet"
    if stem not in ("cifar", "imagenet"):
        raise ModelError(f"stem {stem!r} is not one of: auto, cifar, imagenet")
    return stem


def scaled(channels: int, width_mult: float, divisor: int = 1) -> int:
    """Channels times the width multiplier, rounded to a multiple of divisor (at least divisor)."""
    if width_mult <= 0:
        raise ModelError(f"width_mult must be > 0, got {width_mult}")
    target = channels * width_mult
    value = max(divisor, int(target + divisor / 2) // divisor * divisor)
    return value if value >= 0.9 * target else value + divisor  # never round down by more than 10 %
