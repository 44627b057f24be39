"""ImageFolder on PNGs written by Pillow."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ac_toolchain.data import load_dataset
from ac_toolchain.errors import DataError


def make_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 5) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.PNG")


def test_loads_classes_and_resizes(tmp_path: Path) -> None:
    make_folder(tmp_path)
    splits = load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16), val_fraction=0.2, test_fraction=0.2)
    assert splits.num_classes == 2 and (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 2)
    x, y = splits.train[0]
    assert x.shape == (3, 16, 16) and int(y) in (0, 1)


def test_train_test_subfolders_are_the_splits(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=4)
    make_folder(tmp_path / "test", per_class=2)
    splits = load_dataset(f"imagefolder:{tmp_path}", (1, 32, 32), val_fraction=0.25)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    assert splits.test[0][0].shape == (1, 32, 32)


def test_empty_class_and_corrupt_image(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no images"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))
    (tmp_path / "empty" / "x.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*x\.png"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))


def test_no_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no class folders"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))
