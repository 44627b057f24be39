"""Every zoo model, rates 0.5 and 0.9, every scheme: compact == masked and onnxruntime == torch (<= 1e-4),
and the compact model's parameters are exactly what ``count`` reports for the masked one. The grouped-conv model
(resnext29) is also compiled by TVM for x86 (run here) and android-arm64 (run under qemu-aarch64)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile import get_target
from ac_toolchain.compile.tvm_build import compile_onnx
from ac_toolchain.count import count
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.platform import resolve_platform
from ac_toolchain.prune import SCHEMES, prune
from ac_toolchain.zoo import build_model, model_names
from tests.nets import randomise_bn


def _model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    size = 28 if name == "lenet5" else 32
    options = {} if name == "lenet5" else {"width_mult": 0.25}
    model = build_model(name, num_classes=10, in_channels=3, input_size=(size, size), **options)
    return randomise_bn(model, 0), torch.randn(1, 3, size, size)


def _cases() -> list:
    """Every (model, rate, scheme); ResNet-34's column cases are `slow` (70-90 s each on 2 cores, mostly the
    export of their many CompactConv2d taps): ResNet-18 covers the same basic block in the default suite."""
    slow = [pytest.mark.slow]
    return [
        pytest.param(name, rate, scheme, marks=slow if name == "resnet34" and "column" in scheme else ())
        for name in model_names()
        for rate in (0.5, 0.9)
        for scheme in SCHEMES
    ]


@pytest.mark.parametrize(("name", "rate", "scheme"), _cases())
def test_zoo_model_compacts_exactly(name: str, rate: float, scheme: str, tmp_path: Path) -> None:
    model, x = _model(name)
    dense = count(model, x)
    prune(model, x, rate, scheme)
    small = compact(model, x).eval()
    xs = torch.randn(3, *x.shape[1:])
    with torch.no_grad():
        assert float((small(xs) - model(xs)).abs().max()) <= 1e-4
    counted = count(model, x)
    assert sum(p.numel() for p in small.parameters()) == counted["params"]
    assert counted["params"] < dense["params"] and counted["flops"] < dense["flops"]
    path = export_onnx(small, x, tmp_path / "m.onnx")
    assert check_with_onnxruntime(path, model, x) <= 1e-4


@pytest.mark.parametrize("target", ["x86", "android-arm64"])
@pytest.mark.parametrize("scheme", ["filter", "filter+column"])
def test_grouped_zoo_model_compiles_and_matches_torch(target: str, scheme: str, tmp_path: Path) -> None:
    """Pruned, compacted grouped convs (groups kept, group width shrunk) through TVM equal torch."""
    model, x = _model("resnext29")
    prune(model, x, 0.5, scheme)
    small = compact(model, x).eval()
    assert all(m.groups == 8 for m in small.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    path = export_onnx(expand_columns(small), x, tmp_path / "model.tvm.onnx")
    compile_onnx(path, get_target(target), tmp_path / target)
    got = resolve_platform(target, "none").check_outputs_here(tmp_path / target, x.numpy())
    assert got is not None
    with torch.no_grad():
        assert float(np.abs(got - model(x).numpy()).max()) <= 1e-4
