"""Model registry: zoo names -> builders, plus ``path/to/file.py:Builder`` for a user's own model.

Every builder has the signature ``(num_classes, in_channels, input_size, **options) -> nn.Module``. Zoo
builders name their options as keyword parameters, so an unknown option is caught here before building.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from torch import nn

from ac_toolchain.errors import ModelError

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}
STANDARD_ARGS = ("num_classes", "in_channels", "input_size")
STEMS = ("cifar", "imagenet")
AUTO_STEM_BELOW = 96  # inputs smaller than this (min side) get the CIFAR stem when stem = "auto"


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_model("resnet18")`` adds a builder to :data:`MODELS`."""

    def wrap(fn: Builder) -> Builder:
        old = MODELS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ModelError(f"model name {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        MODELS[name] = fn
        return fn

    return wrap


def model_names() -> list[str]:
    return sorted(MODELS)


def _positive_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= 1


def _check_standard_args(spec: str, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
    """num_classes >= 1, in_channels >= 1, input_size a pair of positive ints (H, W)."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not _positive_int(value):
            raise ModelError(f"{spec}: {name} must be an integer >= 1, got {value!r}")
    pair = isinstance(input_size, tuple | list) and len(input_size) == 2
    if not pair or not all(_positive_int(s) for s in input_size):
        raise ModelError(f"{spec}: input_size must be (height, width) with positive integers, got {input_size!r}")


def _size(input_size: tuple[int, int]) -> tuple[int, int]:
    return int(input_size[0]), int(input_size[1])


def _accepted_options(fn: Builder) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in STANDARD_ARGS]


def _takes_any_keyword(fn: Builder) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def _check_options(spec: str, fn: Builder, options: dict[str, Any]) -> None:
    if _takes_any_keyword(fn):
        return
    accepted = _accepted_options(fn)
    for key in options:
        if key not in accepted:
            raise ModelError(f"{spec} has no option {key!r}; its options: {', '.join(accepted) or 'none'}")


def _unknown_model(spec: str) -> ModelError:
    close = difflib.get_close_matches(spec, model_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ModelError(
        f"unknown model {spec!r}{hint}; zoo models: {', '.join(model_names())}; "
        "or your own model as path/to/file.py:BuilderName"
    )


def _is_user_spec(spec: str) -> bool:
    return spec.endswith(".py") or ".py:" in spec


def _import_file(path: Path) -> Any:
    """Import a .py file by path; registered in sys.modules so dataclasses and pickling inside it work."""
    name = f"ac_user_model_{path.stem}_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _load_user_builder(spec: str) -> Builder:
    path_text, colon, attr = spec.rpartition(":")
    if not colon or not attr:
        raise ModelError(f"{spec}: name the builder too, as path/to/file.py:BuilderName")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {path} not found (expected path/to/file.py:BuilderName)")
    fn = getattr(_import_file(path), attr, None)
    if not callable(fn):
        raise ModelError(f"{path} has no callable {attr!r}; pass path/to/file.py:BuilderName")
    return fn


def _build_user_model(spec: str, args: dict[str, Any], options: dict[str, Any]) -> nn.Module:
    """Pass the standard args the builder's signature takes, and every option (which it must take)."""
    fn = _load_user_builder(spec)
    _check_options(spec, fn, options)
    params, takes_any = inspect.signature(fn).parameters, _takes_any_keyword(fn)
    wanted = {k: v for k, v in args.items() if takes_any or k in params}
    try:
        model = fn(**wanted, **options)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{spec} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(
    spec: str, *, num_classes: int, in_channels: int, input_size: tuple[int, int], **options: Any
) -> nn.Module:
    """Build a zoo model by name, or a user's model from ``path/to/file.py:Builder``.

    ``input_size`` is (height, width); ``options`` are builder keywords such as ``stem`` or ``width_mult``.
    """
    _check_standard_args(spec, num_classes, in_channels, input_size)
    args = {"num_classes": int(num_classes), "in_channels": int(in_channels), "input_size": _size(input_size)}
    if _is_user_spec(spec):
        return _build_user_model(spec, args, options)
    if spec not in MODELS:
        raise _unknown_model(spec)
    _check_options(spec, MODELS[spec], options)
    return MODELS[spec](**args, **options)


def check_stem(stem: str, input_size: tuple[int, int]) -> str:
    """Resolve ``auto`` (CIFAR stem when the shorter side is below 96 px, else ImageNet) and validate."""
    if stem == "auto":
        return "cifar" if min(input_size) < AUTO_STEM_BELOW else "imagenet"
    if stem not in STEMS:
        raise ModelError(f"stem {stem!r} is not one of: auto, {', '.join(STEMS)}")
    return stem


def scaled(channels: int, width_mult: float, divisor: int = 1) -> int:
    """Channels times the width multiplier, rounded to a multiple of divisor (at least divisor).

    Same rounding as torchvision's ``_make_divisible``: never round down by more than 10 %.
    """
    if not isinstance(width_mult, Real) or isinstance(width_mult, bool) or not width_mult > 0:
        raise ModelError(f"width_mult must be a number > 0, got {width_mult!r}")
    target = channels * float(width_mult)
    value = max(divisor, int(target + divisor / 2) // divisor * divisor)
    return value if value >= 0.9 * target else value + divisor
