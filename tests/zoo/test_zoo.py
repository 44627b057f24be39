"""Zoo: reference parameter counts, forward shapes, fx-traceability, user builders and errors."""

from pathlib import Path

import pytest
import torch
from torch import fx

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo import build_model, model_names


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("name", "classes", "channels", "size", "expected"),
    [
        ("lenet5", 10, 1, 28, 61_706),
        ("lenet5", 10, 1, 32, 61_706),
        ("vgg16", 10, 3, 32, 14_990_922),
        ("resnet18", 10, 3, 32, 11_173_962),
        ("resnet18", 1000, 3, 224, 11_689_512),
        ("resnet34", 1000, 3, 224, 21_797_672),
        ("resnet50", 1000, 3, 224, 25_557_032),
        ("mobilenetv2", 1000, 3, 224, 3_504_872),
    ],
)
def test_reference_parameter_counts(name: str, classes: int, channels: int, size: int, expected: int) -> None:
    assert n_params(build_model(name, num_classes=classes, in_channels=channels, input_size=(size, size))) == expected


SHAPES = [
    (name, c, s)
    for name in ["lenet5", "resnet18", "resnet34", "resnet50", "mobilenetv2"]
    for c, s in [(3, 32), (1, 28)]
]


@pytest.mark.parametrize(("name", "channels", "size"), [*SHAPES, ("vgg16", 3, 32), ("vgg16", 1, 32)])
def test_forward_shapes_and_fx(name: str, channels: int, size: int) -> None:
    m = build_model(name, num_classes=7, in_channels=channels, input_size=(size, size), **_small(name)).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
        assert torch.allclose(fx.symbolic_trace(m)(x), m(x))


def _small(name: str) -> dict[str, float]:
    return {} if name == "lenet5" else {"width_mult": 0.25}


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_imagenet_stem_at_224(name: str) -> None:
    m = build_model(name, num_classes=1000, in_channels=3, input_size=(224, 224), width_mult=0.25).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_registry_lists_the_zoo() -> None:
    assert model_names() == ["lenet5", "mobilenetv2", "resnet18", "resnet34", "resnet50", "vgg16"]


def test_user_builder_file(tmp_path: Path) -> None:
    src = tmp_path / "my_net.py"
    src.write_text(
        "import torch.nn as nn\n"
        "def Build(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    m = build_model(f"{src}:Build", num_classes=3, in_channels=2, input_size=(8, 8))
    assert m(torch.randn(1, 2, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("alexnet", {}, "unknown model 'alexnet'"),
        ("/nope/net.py:Build", {}, "/nope/net.py not found"),
        ("resnet18", {"depth": 3}, "resnet18 has no option 'depth'"),
        ("resnet18", {"stem": "tiny"}, "stem 'tiny' is not one of"),
        ("resnet18", {"width_mult": 0.0}, "width_mult must be > 0"),
        ("vgg16", {"input_size": (28, 28)}, "at least 32x32"),
        ("lenet5", {"input_size": (0, 8)}, "must be positive"),
        ("lenet5", {"num_classes": 0}, "must be positive"),
    ],
)
def test_errors_are_model_errors(spec: str, kwargs: dict, needle: str) -> None:
    args = {"num_classes": 10, "in_channels": 3, "input_size": (32, 32), **kwargs}
    with pytest.raises(ModelError) as err:
        build_model(spec, **args)
    assert needle in str(err.value)


def test_user_file_without_builder(tmp_path: Path) -> None:
    src = tmp_path / "net.py"
    src.write_text("x = 1\n")
    with pytest.raises(ModelError, match="has no callable 'Build'"):
        build_model(f"{src}:Build", num_classes=2, in_channels=1, input_size=(8, 8))
    src.write_text("def Build():\n    return 3\n")
    with pytest.raises(ModelError, match=r"returned int, not a torch\.nn\.Module"):
        build_model(f"{src}:Build", num_classes=2, in_channels=1, input_size=(8, 8))
