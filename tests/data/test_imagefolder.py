"""``imagefolder:PATH`` over PNGs written by Pillow: classes, colour modes, given splits, lazy decoding, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ac_toolchain.data import load_dataset
from ac_toolchain.errors import DataError


def make_folder(
    root: Path, classes: tuple[str, ...] = ("dog", "cat"), per_class: int = 5, mode: str = "RGB", size: int = 20
) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(len(classes) * 100 + per_class)
    written: dict[str, list[np.ndarray]] = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        shape = (size, size + 4, 3) if mode == "RGB" else (size, size + 4)
        written[name] = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(per_class)]
        for i, pixels in enumerate(written[name]):
            Image.fromarray(pixels).save(root / name / f"{i}.{'PNG' if i % 2 else 'png'}")  # any case
        (root / name / "notes.txt").write_text("not an image: ignored")
    return written


def test_classes_sorted_split_and_resized(tmp_path: Path) -> None:
    make_folder(tmp_path)
    splits = load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16), val_fraction=0.2, test_fraction=0.2)
    assert splits.num_classes == 2 and (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 2)
    assert splits.source_shape == (3, 20, 24)
    store = splits.train.store
    assert [f.parent.name for f in store.files] == ["cat"] * 5 + ["dog"] * 5  # type: ignore[attr-defined]
    assert store.labels.tolist() == [0] * 5 + [1] * 5  # cat = 0, dog = 1 (sorted names)
    x, y = next(iter(DataLoader(splits.train, batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_pixels_decode_exactly(tmp_path: Path) -> None:
    written = make_folder(tmp_path, size=12)
    splits = load_dataset(f"imagefolder:{tmp_path}", (3, 12, 16), val_fraction=0.0, test_fraction=0.0)
    raw = splits.train.store.load(torch.tensor([0, 7]), (3, 12, 16))  # cat/0.png, dog/2.png; fits: no padding
    assert torch.equal((raw[0] * 255).round().to(torch.uint8), torch.from_numpy(written["cat"][0]).permute(2, 0, 1))
    assert torch.equal((raw[1] * 255).round().to(torch.uint8), torch.from_numpy(written["dog"][2]).permute(2, 0, 1))


def test_greyscale_folder_is_one_channel(tmp_path: Path) -> None:
    written = make_folder(tmp_path, mode="L", size=8)
    splits = load_dataset(f"imagefolder:{tmp_path}", (3, 8, 12), val_fraction=0.0, test_fraction=0.0)
    assert splits.source_shape == (1, 8, 12)
    raw = splits.train.store.load(torch.tensor([0]), (3, 8, 12))  # 1 -> 3 channels by repetition
    expected = torch.from_numpy(written["cat"][0]).float() / 255
    assert all(torch.allclose(raw[0, c], expected) for c in range(3))


def test_one_colour_image_makes_the_folder_rgb(tmp_path: Path) -> None:
    make_folder(tmp_path, mode="L", size=8)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "dog" / "red.png")
    splits = load_dataset(f"imagefolder:{tmp_path}", (1, 8, 8), val_fraction=0.0, test_fraction=0.0)
    assert splits.source_shape[0] == 3
    index = [f.name for f in splits.train.store.files].index("red.png")  # type: ignore[attr-defined]
    raw = splits.train.store.load(torch.tensor([index]), (1, 8, 8))  # 3 -> 1 by luminance
    assert torch.allclose(raw, torch.full((1, 1, 8, 8), 0.299), atol=1e-6)


def test_train_val_test_subfolders_are_the_splits(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=4)
    make_folder(tmp_path / "test", per_class=2)
    splits = load_dataset(f"imagefolder:{tmp_path}", (1, 32, 32), val_fraction=0.25, test_fraction=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)  # val carved from train
    assert splits.test[0][0].shape == (1, 32, 32)
    make_folder(tmp_path / "val", classes=("dog",), per_class=3)  # a split may lack a class
    splits = load_dataset(f"imagefolder:{tmp_path}", (1, 32, 32))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 3, 4)
    assert splits.val.labels.tolist() == [1, 1, 1]


def test_split_with_an_unknown_class(tmp_path: Path) -> None:
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "test", classes=("cat", "bird"))
    with pytest.raises(DataError, match=r"test/bird is not one of the training classes \(cat, dog\)"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))


def test_empty_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty has no images"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))


def test_corrupt_image_is_named_at_load(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*cat/broken\.jpg"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))


def test_image_damaged_after_loading_is_named_when_fetched(tmp_path: Path) -> None:
    make_folder(tmp_path)
    splits = load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16), val_fraction=0.0, test_fraction=0.0)
    path = tmp_path / "dog" / "3.PNG"
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut
    with pytest.raises(DataError, match=r"cannot read image .*dog/3\.PNG"):
        next(iter(DataLoader(splits.train, batch_size=10)))


def test_sixteen_bit_images_are_refused(tmp_path: Path) -> None:
    make_folder(tmp_path)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint16)).save(tmp_path / "cat" / "deep.png")
    with pytest.raises(DataError, match=r"deep\.png has Pillow mode 'I;16'"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))


def test_no_class_folders(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"has no class folders \(expected .*/<class>/<image>\)"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 16, 16))
