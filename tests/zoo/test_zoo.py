"""Zoo: reference parameter counts, forward shapes, fx-traceability, stems, user builders and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from ac_toolchain.errors import ModelError
from ac_toolchain.zoo import MODELS, build_model, model_names, register_model

ZOO = ["lenet5", "mobilenetv2", "resnet18", "resnet34", "resnet50", "resnext29", "vgg16"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _build(name: str, classes: int, channels: int, size: int, **options: Any) -> nn.Module:
    return build_model(name, num_classes=classes, in_channels=channels, input_size=(size, size), **options)


@pytest.mark.parametrize(
    ("name", "classes", "channels", "size", "expected"),
    [
        ("lenet5", 10, 1, 28, 61_706),
        ("lenet5", 10, 1, 32, 61_706),
        ("vgg16", 10, 3, 32, 14_990_922),
        ("resnet18", 10, 3, 32, 11_173_962),  # kuangliu CIFAR layout
        ("resnet34", 10, 3, 32, 21_282_122),
        ("resnet50", 10, 3, 32, 23_520_842),
        ("resnext29", 10, 3, 32, 34_426_698),  # 8x64d: 34.4 M in Xie et al. 2017, table 7
        ("resnet18", 1000, 3, 224, 11_689_512),  # torchvision layout from here on
        ("resnet34", 1000, 3, 224, 21_797_672),
        ("resnet50", 1000, 3, 224, 25_557_032),
        ("mobilenetv2", 1000, 3, 224, 3_504_872),
    ],
)
def test_reference_parameter_counts(name: str, classes: int, channels: int, size: int, expected: int) -> None:
    assert n_params(_build(name, classes, channels, size)) == expected


# (name, channels, size): CIFAR 3x32x32 and MNIST 1x28x28; VGG-16 needs MNIST padded to 32.
SHAPES = [(name, c, s) for name in ZOO for c, s in [(3, 32), (1, 28)] if (name, s) != ("vgg16", 28)]


@pytest.mark.parametrize(("name", "channels", "size"), [*SHAPES, ("vgg16", 1, 32)])
def test_forward_shape(name: str, channels: int, size: int) -> None:
    m = _build(name, 7, channels, size).eval()
    with torch.no_grad():
        assert m(torch.randn(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_imagenet_stem_at_224(name: str) -> None:
    m = _build(name, 1000, 3, 224, stem="imagenet").eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("name", ZOO)
def test_fx_symbolic_trace_matches_eager(name: str) -> None:
    m = _build(name, 10, 3, 32, **({} if name == "lenet5" else {"width_mult": 0.25})).eval()
    traced = fx.symbolic_trace(m)
    modules = dict(m.named_modules())
    called = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert called and all(target in modules for target in called)  # every layer addressable by name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(traced(x), m(x))


@pytest.mark.parametrize("name", ZOO)
def test_torch_export(name: str) -> None:
    m = _build(name, 10, 3, 32, **({} if name == "lenet5" else {"width_mult": 0.25})).eval()
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(m, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), m(x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "size", "conv1_kernel"),
    [("resnet18", 32, 3), ("resnet18", 95, 3), ("resnet18", 96, 7), ("resnet50", 224, 7)],
)
def test_auto_stem(name: str, size: int, conv1_kernel: int) -> None:
    m = _build(name, 10, 3, size, width_mult=0.25)
    assert m.conv1.kernel_size == (conv1_kernel, conv1_kernel)
    assert isinstance(m.maxpool, nn.MaxPool2d) == (conv1_kernel == 7)


@pytest.mark.parametrize(("stem", "size", "final"), [("cifar", 32, 4), ("imagenet", 32, 1), ("imagenet", 224, 7)])
def test_mobilenet_stem_resolution(stem: str, size: int, final: int) -> None:
    m = _build("mobilenetv2", 10, 3, size, stem=stem, width_mult=0.25).eval()
    with torch.no_grad():
        assert m.features(torch.randn(1, 3, size, size)).shape[-2:] == (final, final)


def test_mobilenet_width_rounding_follows_torchvision() -> None:
    # channels rounded to multiples of 8 as torchvision's _make_divisible; the 1280 head is never narrowed
    assert n_params(_build("mobilenetv2", 1000, 3, 224, width_mult=0.5)) == 1_968_680


def test_width_mult_scales_channels() -> None:
    r = _build("resnet50", 10, 3, 32, width_mult=0.5)
    assert (r.conv1.out_channels, r.fc.in_features) == (32, 1024)
    v = _build("vgg16", 10, 3, 32, width_mult=0.5)
    assert v.features[0].out_channels == 32 and v.classifier[0].in_features == 256
    mb = _build("mobilenetv2", 10, 3, 32, width_mult=0.5)
    assert mb.features[0][0].out_channels == 16 and mb.classifier[1].in_features == 1280  # last stays 1280


def test_torchvision_module_names() -> None:
    """State-dict keys follow torchvision, so pruning rates and pretrained weights address the same layers."""
    r = _build("resnet50", 1000, 3, 224).state_dict()
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"} <= set(r)
    mb = _build("mobilenetv2", 1000, 3, 224).state_dict()
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.18.1.bias", "classifier.1.weight"} <= set(mb)


@settings(max_examples=25, deadline=None)
@given(st.integers(12, 64), st.integers(12, 64))
def test_lenet_flatten_follows_input_size(h: int, w: int) -> None:
    m = build_model("lenet5", num_classes=3, in_channels=1, input_size=(h, w))
    assert m(torch.randn(1, 1, h, w)).shape == (1, 3)


def test_registry_lists_the_zoo() -> None:
    assert model_names() == ZOO
    assert set(MODELS) == set(ZOO)


def test_register_model_rejects_a_second_builder_under_a_taken_name() -> None:
    with pytest.raises(ModelError, match="'resnet18' is already registered"):
        register_model("resnet18")(lambda num_classes, in_channels, input_size: nn.Identity())


USER_FILE = """
import dataclasses
import torch.nn as nn

@dataclasses.dataclass
class Cfg:
    width: int = 4

def Build(num_classes, in_channels, width=4):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))

def Anything(**kwargs):
    return nn.Linear(kwargs["input_size"][0], kwargs["num_classes"] * kwargs["extra"])
"""


def _user_file(tmp_path: Path, text: str = USER_FILE) -> Path:
    src = tmp_path / "my_net.py"
    src.write_text(text)
    return src


def test_user_builder_file(tmp_path: Path) -> None:
    src = _user_file(tmp_path)
    m = build_model(f"{src}:Build", num_classes=3, in_channels=2, input_size=(8, 8), width=5)
    assert m[0].out_channels == 5 and m(torch.randn(1, 2, 8, 8)).shape == (1, 3)
    m = build_model(f"{src}:Anything", num_classes=3, in_channels=2, input_size=(8, 8), extra=2)
    assert (m.in_features, m.out_features) == (8, 6)


def _args(**kwargs: Any) -> dict[str, Any]:
    return {"num_classes": 10, "in_channels": 3, "input_size": (32, 32), **kwargs}


@pytest.mark.parametrize(
    ("spec", "kwargs", "needles"),
    [
        ("alexnet", {}, ["unknown model 'alexnet'", "resnet18", "path/to/file.py:BuilderName"]),
        ("resnet-18", {}, ["did you mean 'resnet18'"]),
        ("/nope/net.py:Build", {}, ["/nope/net.py not found"]),
        ("resnet18", {"depth": 3}, ["resnet18 has no option 'depth'", "stem, width_mult"]),
        ("lenet5", {"width_mult": 0.5}, ["lenet5 has no option 'width_mult'", "none"]),
        ("resnet18", {"stem": "tiny"}, ["stem 'tiny'", "cifar, imagenet"]),
        ("mobilenetv2", {"stem": "tiny"}, ["stem 'tiny'"]),
        ("resnet18", {"width_mult": 0.0}, ["width_mult must be a number > 0"]),
        ("vgg16", {"width_mult": -1.0}, ["width_mult must be a number > 0"]),
        ("mobilenetv2", {"width_mult": "wide"}, ["width_mult", "'wide'"]),
        ("lenet5", {"num_classes": 0}, ["num_classes must be an integer >= 1"]),
        ("resnet18", {"in_channels": 0}, ["in_channels must be an integer >= 1"]),
        ("lenet5", {"input_size": (0, 8)}, ["input_size", "(0, 8)"]),
        ("lenet5", {"input_size": 32}, ["input_size"]),
        ("vgg16", {"input_size": (28, 28)}, ["vgg16", "at least 32x32"]),
        ("lenet5", {"input_size": (11, 28)}, ["lenet5", "at least 12x12"]),
    ],
)
def test_errors_are_model_errors(spec: str, kwargs: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ModelError) as err:
        build_model(spec, **_args(**kwargs))
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("text", "spec_tail", "options", "needle"),
    [
        ("x = 1\n", ":Build", {}, "has no callable 'Build'"),
        ("def Build():\n    return 3\n", ":Build", {}, "returned int, not a torch.nn.Module"),
        ("def Build(:\n", ":Build", {}, "importing"),
        ("def Build(num_classes):\n    raise ValueError('boom')\n", ":Build", {}, "failed to build: ValueError: boom"),
        (USER_FILE, ":Build", {"depth": 2}, "has no option 'depth'"),
        (USER_FILE, "", {}, "name the builder too"),
    ],
)
def test_user_file_errors(tmp_path: Path, text: str, spec_tail: str, options: dict[str, Any], needle: str) -> None:
    src = _user_file(tmp_path, text)
    with pytest.raises(ModelError) as err:
        build_model(f"{src}{spec_tail}", **_args(**options))
    assert needle in str(err.value)
