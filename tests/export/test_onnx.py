"""ONNX export: the file passes onnx.checker and onnxruntime matches torch; failures are clear."""

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from ac_toolchain.errors import ModelError
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.prune import uniform_filter_prune


def test_pruned_model_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    uniform_filter_prune(net, 0.5)
    x = torch.randn(1, 1, 28, 28)
    path = export_onnx(net.eval(), x, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert check_with_onnxruntime(path, net, x) <= 1e-4


def test_unexportable_model_is_a_model_error(tmp_path: Path) -> None:
    class Histogram(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.histc(x, 4)  # the ONNX exporter has no translation for this

    with pytest.raises(ModelError, match=r"ONNX export failed: NotImplementedError: aten_histc"):
        export_onnx(Histogram(), torch.randn(1, 4), tmp_path / "bad.onnx")
