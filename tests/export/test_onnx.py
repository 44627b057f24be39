"""ONNX export: the file passes onnx.checker and onnxruntime matches torch; failures are clear."""

from pathlib import Path

import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ac_toolchain.compact import compact
from ac_toolchain.count import count
from ac_toolchain.errors import ModelError
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.prune import SCHEMES, prune
from tests.nets import BLOCKS, RandomNet, randomise_bn


def test_pruned_model_exports_and_matches_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    x = torch.randn(1, 1, 28, 28)
    prune(net, x, 0.5, "filter")
    path = export_onnx(net.eval(), x, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert check_with_onnxruntime(path, net, x) <= 1e-4


def test_export_creates_the_missing_folder(tmp_path: Path) -> None:
    """A new folder is made, not reported as an unsupported op (the exporter's FileNotFoundError did that)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.randn(1, 1, 8, 8)
    path = export_onnx(net, x, tmp_path / "new" / "deeper" / "m.onnx")
    assert path.is_file()
    assert check_with_onnxruntime(path, net, x) <= 1e-5


def test_unexportable_model_is_a_model_error(tmp_path: Path) -> None:
    class Histogram(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.histc(x, 4)  # the ONNX exporter has no translation for this

    with pytest.raises(ModelError, match=r"ONNX export failed: NotImplementedError: aten_histc"):
        export_onnx(Histogram(), torch.randn(1, 4), tmp_path / "bad.onnx")


def float_initialiser_elements(path: Path) -> int:
    """Elements of the float initialisers (weights, biases, BN statistics), not of int64 indices / shapes."""
    model = onnx.load(str(path))
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    total = 0
    for init in model.graph.initializer:
        if init.data_type in floats:
            n = 1
            for d in init.dims:
                n *= d
            total += n
    return total


nets = st.builds(
    lambda kinds, widths, seed: (kinds, widths, seed),
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    st.lists(st.integers(2, 8), min_size=4, max_size=4),
    st.integers(0, 2**16),
)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(spec=nets, rate=st.floats(0.3, 0.9), scheme=st.sampled_from(SCHEMES))
def test_compact_onnx_matches_torch_and_holds_no_hidden_weights(
    tmp_path: Path, spec: tuple[list[str], list[int], int], rate: float, scheme: str
) -> None:
    kinds, widths, seed = spec
    torch.manual_seed(seed)
    net = randomise_bn(RandomNet(kinds, widths[: len(kinds)]), seed)
    x = torch.randn(1, 3, 8, 8)
    prune(net, x, rate, scheme)
    small = compact(net, x).eval()
    path = export_onnx(small, x, tmp_path / "compact.onnx")
    assert check_with_onnxruntime(path, net, x) <= 1e-4
    # The exporter folds every BN into the conv before it (2 params per channel become 1 bias), so the
    # initialisers hold exactly the counted structure minus one element per BN channel: no hidden weights.
    bn_channels = sum(m.num_features for m in small.modules() if isinstance(m, nn.BatchNorm2d))
    assert float_initialiser_elements(path) == count(net, x)["params"] - bn_channels
