"""Spec parsing, argument and fraction checks, seeded carving, shipped splits, train-only normalisation."""

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ac_toolchain.data import Source, TensorImages, dataset_names, load_dataset
from ac_toolchain.data.registry import LOADERS, Entry, carve, parse_spec
from ac_toolchain.data.transforms import Shape
from ac_toolchain.errors import DataError


def test_names() -> None:
    assert dataset_names() == ["cifar10", "imagefolder", "mnist", "mnist-mini", "synthetic"]


def test_spec_splits_on_the_first_colon(tmp_path: Path) -> None:
    (tmp_path / "a:b").mkdir()
    assert parse_spec(f"mnist:{tmp_path}/a:b") == ("mnist", f"{tmp_path}/a:b")
    assert parse_spec("synthetic") == ("synthetic", None)
    assert parse_spec("synthetic:64") == ("synthetic", "64")


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("imagenet", ["unknown dataset 'imagenet'", "cifar10, imagefolder, mnist, mnist-mini, synthetic", "NAME:PATH"]),
        ("", ["unknown dataset ''"]),
        ("mnist", ["mnist needs a folder: --data mnist:PATH"]),
        ("cifar10:", ["cifar10 needs a folder: --data cifar10:PATH"]),
        ("imagefolder:/no/such/folder", ["folder /no/such/folder not found"]),
        ("mnist-mini:/tmp", ["mnist-mini takes no PATH", "--data mnist-mini", "mnist:PATH"]),
        ("synthetic:abc", ["image count", "synthetic:N"]),
        ("synthetic:5", ["at least 10"]),
    ],
)
def test_bad_specs_say_what_to_do(spec: str, needles: list[str]) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(spec, (1, 28, 28))
    for needle in needles:
        assert needle in str(err.value)


def test_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file; PATH must be the folder"):
        load_dataset(f"mnist:{tmp_path / 'f'}", (1, 28, 28))


@pytest.mark.parametrize(
    ("val", "test", "needle"),
    [
        (-0.1, 0.2, "val_fraction must be in [0, 1), got -0.1"),
        (0.1, 1.0, "test_fraction must be in [0, 1), got 1.0"),
        (math.nan, 0.2, "val_fraction must be in [0, 1)"),
        (0.6, 0.5, "val_fraction (0.6) + test_fraction (0.5) must be below 1"),
    ],
)
def test_bad_fractions(val: float, test: float, needle: str) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("synthetic", (1, 8, 8), val_fraction=val, test_fraction=test)
    assert needle in str(err.value)


@pytest.mark.parametrize("shape", [(0, 8, 8), (1, 8), (1, -2, 8)])
def test_bad_input_shape(shape: Shape) -> None:
    with pytest.raises(DataError, match=r"input shape must be \(C, H, W\)"):
        load_dataset("synthetic", shape)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 400),
    val=st.floats(0, 0.45),
    test=st.floats(0, 0.45),
    seed=st.integers(0, 2**31),
)
def test_carve_is_a_seeded_partition(n: int, val: float, test: float, seed: int) -> None:
    parts = carve(n, {"val": val, "test": test}, seed)
    assert torch.equal(torch.cat(list(parts.values())).sort().values, torch.arange(n))
    for name, fraction in (("val", val), ("test", test)):
        expected = max(1, round(fraction * n)) if fraction > 0 else 0
        assert len(parts[name]) == expected
    assert all(torch.equal(p, p.sort().values) for p in parts.values())
    again = carve(n, {"val": val, "test": test}, seed)
    assert all(torch.equal(parts[k], again[k]) for k in parts)


def test_too_few_images_for_the_fractions() -> None:
    with pytest.raises(DataError, match="no training images remain"):
        carve(2, {"val": 0.1, "test": 0.1}, 0)


def register_fake(monkeypatch: pytest.MonkeyPatch, source: Source) -> None:
    monkeypatch.setitem(LOADERS, "fake", Entry(lambda arg, shape, seed: source, "none"))


def constant(value: int, n: int, label: int = 0) -> TensorImages:
    return TensorImages(torch.full((n, 1, 4, 4), value, dtype=torch.uint8), torch.full((n,), label))


def test_shipped_splits_are_used_as_given_and_stats_come_from_train(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = TensorImages(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 4, 4).contiguous(),
                        torch.arange(20) % 2)  # fmt: skip
    register_fake(monkeypatch, Source(pool, num_classes=2, test=constant(255, 7, label=1)))
    splits = load_dataset("fake", (1, 4, 4), val_fraction=0.25, test_fraction=0.5)  # test_fraction: test is shipped
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 7)
    train_values = splits.train.store.images[splits.train.indices].float() / 255  # type: ignore[attr-defined]
    assert torch.allclose(splits.train.normalise.mean, train_values.mean().view(1))
    assert splits.val.normalise is splits.train.normalise is splits.test.normalise
    x, y = splits.test[0]
    expected = (1 - splits.train.normalise.mean) / splits.train.normalise.std
    assert torch.allclose(x, expected.expand(1, 4, 4)) and int(y) == 1


def test_stats_sample_is_limited_for_slow_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    class Counting(TensorImages):
        stats_limit = 5
        loaded = 0

        def load(self, indices: torch.Tensor, shape: Shape) -> torch.Tensor:
            Counting.loaded += len(indices)
            return super().load(indices, shape)

    register_fake(monkeypatch, Source(Counting(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.zeros(50)), 1))
    load_dataset("fake", (1, 2, 2))
    assert Counting.loaded == 5
