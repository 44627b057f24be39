"""Dataset registry: ``--data NAME`` or ``--data NAME:PATH`` -> seeded train / val / test splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ac_toolchain.data.transforms import BatchDataset, Normalise, Shape, TensorImages, adapt
from ac_toolchain.errors import DataError


@dataclass(frozen=True)
class Raw:
    """What a loader returns: uint8 images [N, C, H, W] + labels [N], and optionally its own test set."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


@dataclass(frozen=True)
class Splits:
    name: str
    train: Dataset[tuple[torch.Tensor, torch.Tensor]]
    val: Dataset[tuple[torch.Tensor, torch.Tensor]]
    test: Dataset[tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    source_shape: tuple[int, int, int]


Loader = Callable[[Path | None, Shape, int], "Raw | Splits"]
LOADERS: dict[str, tuple[Loader, bool]] = {}  # name -> (loader, needs a PATH)


def register_dataset(name: str, needs_path: bool) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        LOADERS[name] = (fn, needs_path)
        return fn

    return wrap


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def _parse(spec: str) -> tuple[str, Path | None]:
    name, _, path = spec.partition(":")
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; datasets: {', '.join(dataset_names())} (as NAME or NAME:PATH)")
    needs_path = LOADERS[name][1]
    if needs_path and not path:
        raise DataError(f"{name} needs a folder: --data {name}:PATH")
    if path and needs_path and not Path(path).expanduser().exists():
        raise DataError(f"{name}: folder {path} not found")
    return name, Path(path).expanduser() if path else None


def _check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"val_fraction ({val}) and test_fraction ({test}) must be in [0, 1) with a sum below 1")


def _split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """A seeded permutation of range(n) cut into len(fractions) + 1 parts (the first gets the rest)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(f * n) for f in fractions]
    parts, start = [], n - sum(sizes)
    parts.append(perm[:start])
    for size in sizes:
        parts.append(perm[start : start + size])
        start += size
    return parts


def _normalise_on_train(splits: list[BatchDataset], shape: Shape) -> None:
    train = splits[0]
    sample = list(range(min(len(train), 2048)))
    stats = Normalise.fit(adapt(train.raw(sample), shape)) if sample else Normalise(torch.zeros(1), torch.ones(1))
    for ds in splits:
        ds.normalise = stats


def from_raw(name: str, raw: Raw, shape: Shape, seed: int, val: float, test: float) -> Splits:
    """Seeded splits of a loader's arrays; its own test set is used when it has one."""
    if raw.test_images is None or raw.test_labels is None:
        train_i, val_i, test_i = _split_indices(len(raw.labels), (val, test), seed)
        parts = [TensorImages(raw.images, raw.labels, i, shape) for i in (train_i, val_i, test_i)]
    else:
        train_i, val_i = _split_indices(len(raw.labels), (val,), seed)
        parts = [TensorImages(raw.images, raw.labels, i, shape) for i in (train_i, val_i)]
        parts.append(TensorImages(raw.test_images, raw.test_labels, torch.arange(len(raw.test_labels)), shape))
    _normalise_on_train(list(parts), shape)
    c, h, w = raw.images.shape[1:]
    return Splits(name, parts[0], parts[1], parts[2], raw.num_classes, (c, h, w))


def load_dataset(
    spec: str, input_shape: Shape, *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Splits:
    """Load ``NAME`` or ``NAME:PATH`` adapted to ``input_shape`` (C, H, W), with seeded splits."""
    _check_fractions(val_fraction, test_fraction)
    name, path = _parse(spec)
    loaded = LOADERS[name][0](path, input_shape, seed)
    if isinstance(loaded, Splits):
        return loaded
    return from_raw(name, loaded, input_shape, seed, val_fraction, test_fraction)
