"""Dataset registry: ``--data NAME`` or ``--data NAME:PATH`` -> seeded, normalised train / val / test splits.

A loader turns its argument (the part after the first ':') into a ``Source``: one store of images to split,
plus the validation / test stores the data set ships with, if any. Splits it does not ship are carved from the
pool with a ``torch.Generator`` seeded by ``seed``; normalisation statistics come from the training split only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ac_toolchain.data.datasets import ImageDataset, ImageStore
from ac_toolchain.data.transforms import Normalise, Shape
from ac_toolchain.errors import DataError

ArgKind = Literal["none", "folder", "text"]  # no argument / a folder that must exist / free text the loader parses
SPLITS = ("train", "val", "test")
STATS_CHUNK = 1024  # images adapted at a time while fitting the normalisation


@dataclass(frozen=True)
class Source:
    """What a loader returns: ``pool`` is split by the fractions, ``val`` / ``test`` (if shipped) are used as is."""

    pool: ImageStore
    num_classes: int
    val: ImageStore | None = None
    test: ImageStore | None = None


@dataclass(frozen=True)
class Splits:
    name: str  # the registry name, e.g. "mnist-mini"
    train: ImageDataset  # items: (float32 [C, H, W] adapted + normalised, int64 [])
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    source_shape: tuple[int, int, int]  # (C, H, W) of the raw images before adaptation


Loader = Callable[[str | None, Shape, int], Source]  # (argument, model input shape, seed) -> Source


@dataclass(frozen=True)
class Entry:
    loader: Loader
    arg: ArgKind


LOADERS: dict[str, Entry] = {}


def register_dataset(name: str, *, arg: ArgKind) -> Callable[[Loader], Loader]:
    """Decorator: make ``loader`` available as ``--data name`` (arg "none"/"text") or ``name:PATH`` ("folder")."""

    def wrap(loader: Loader) -> Loader:
        LOADERS[name] = Entry(loader, arg)
        return loader

    return wrap


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        folders = ", ".join(f"{n}:PATH" for n in dataset_names() if LOADERS[n].arg == "folder")
        raise DataError(f"{name} takes no PATH (got {arg!r}): use --data {name}; datasets read from files: {folders}")


def _folder_arg(name: str, arg: str | None) -> None:
    if not arg:
        raise DataError(f"{name} needs a folder: --data {name}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(f"{name}: folder {arg} not found (--data {name}:PATH)")
    if not path.is_dir():
        raise DataError(f"{name}: {arg} is a file; PATH must be the folder that holds the data set")


# How each kind of argument is checked before the loader runs ("text" is the loader's to check).
ARG_CHECKS: dict[ArgKind, Callable[[str, str | None], None]] = {
    "none": _no_arg,
    "folder": _folder_arg,
    "text": lambda name, arg: None,
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:PATH`` (split on the first ':') -> (name, argument or None), checked."""
    name, colon, arg = spec.partition(":")
    if name not in LOADERS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())} "
            "as --data NAME or --data NAME:PATH (e.g. cifar10:~/data/cifar-10-batches-py)"
        )
    argument = arg if colon else None
    ARG_CHECKS[LOADERS[name].arg](name, argument)
    return name, argument


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{label} must be in [0, 1), got {value}")
    if not val_fraction + test_fraction < 1:
        raise DataError(f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) must be below 1")


def check_shape(shape: Shape) -> Shape:
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise DataError(f"input shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    return c, h, w


def carve(n: int, fractions: dict[str, float], seed: int) -> dict[str, torch.Tensor]:
    """Seeded split of range(n): each named part gets round(fraction * n) (at least 1 when the fraction is not 0),
    "train" the rest. Indices come back sorted (int64 [size]) so fetches walk the store in order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = {}, 0
    for name, fraction in fractions.items():
        size = max(1, round(fraction * n)) if fraction > 0 else 0
        parts[name] = perm[start : start + size].sort().values
        start += size
    if start >= n:
        raise DataError(f"{n} images are too few for the split fractions {fractions}: no training images remain")
    parts["train"] = perm[start:].sort().values
    return parts


def _stat_batches(store: ImageStore, indices: torch.Tensor, shape: Shape, seed: int) -> Iterator[torch.Tensor]:
    """Adapted training images in chunks (float32 [B, *shape]); a seeded sample when the store sets a limit."""
    if store.stats_limit is not None and len(indices) > store.stats_limit:
        pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[: store.stats_limit]
        indices = indices[pick.sort().values]
    for chunk in indices.split(STATS_CHUNK):
        yield store.load(chunk, shape)


def build_splits(name: str, source: Source, shape: Shape, seed: int, fractions: dict[str, float]) -> Splits:
    """Carve what the source does not ship, fit the normalisation on train, wrap each split as a dataset."""
    shipped = {"val": source.val, "test": source.test}
    parts = carve(len(source.pool), {k: f for k, f in fractions.items() if shipped[k] is None}, seed)
    stores: dict[str, ImageStore] = {k: s for k, s in shipped.items() if s is not None}
    for split, store in stores.items():
        parts[split] = torch.arange(len(store))
    stats = Normalise.fit(_stat_batches(source.pool, parts["train"], shape, seed))
    views = {s: ImageDataset(stores.get(s, source.pool), parts[s], shape, stats) for s in SPLITS}
    return Splits(name, views["train"], views["val"], views["test"], source.num_classes, source.pool.source_shape)


def load_dataset(
    spec: str,
    input_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Splits:
    """Load ``NAME`` or ``NAME:PATH`` adapted to ``input_shape`` (C, H, W), split by the fractions with ``seed``.

    Data sets that ship their own test set (mnist, cifar10, imagefolder with PATH/test) ignore ``test_fraction``.
    """
    check_fractions(val_fraction, test_fraction)
    shape = check_shape(input_shape)
    name, arg = parse_spec(spec)
    source = LOADERS[name].loader(arg, shape, seed)
    return build_splits(name, source, shape, seed, {"val": val_fraction, "test": test_fraction})
