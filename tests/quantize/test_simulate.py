"""Our torch simulation of a QDQ int8 model against onnxruntime running the same file: zoo models pruned by
filters and by columns (Gather, Clip, MaxPool, the residual add), int8 and uint8 activations; an op it does not
know is refused by name."""

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import ac_toolchain as ac
from ac_toolchain.errors import ModelError
from ac_toolchain.quantize import QdqSimulation, export_fp32, quantize_onnx
from ac_toolchain.quantize.ptq import session
from ac_toolchain.quantize.simulate import output_step

CASES = [  # (model, input shape, scheme, options)
    ("lenet5", (1, 1, 28, 28), "filter+column", {}),
    ("resnet18", (1, 3, 32, 32), "filter+column", {"width_mult": 0.25}),
    ("mobilenetv2", (1, 3, 32, 32), "filter", {"width_mult": 0.25}),
    ("vgg16", (1, 3, 32, 32), "filter", {"width_mult": 0.25}),
]


def _qdq(tmp: Path, name: str, shape: tuple[int, ...], scheme: str, activations: str, **options: Any) -> Path:
    torch.manual_seed(0)
    net = ac.build_model(name, num_classes=10, in_channels=shape[1], input_size=shape[2:], **options)
    x = torch.randn(*shape)
    ac.prune(net, x, 0.5, scheme=scheme)
    fp32 = export_fp32(ac.compact(net.eval(), x).eval(), x, tmp / "fp32.onnx")
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, *shape[1:], generator=gen) for _ in range(2)]
    return quantize_onnx(fp32, tmp / "int8.onnx", calib, 2, "minmax", activations)


@pytest.mark.parametrize(("name", "shape", "scheme", "options"), CASES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_the_simulation_gives_onnxruntimes_outputs(tmp_path: Path, name: str, shape: tuple[int, ...], scheme: str,
                                                     options: dict[str, Any], activations: str) -> None:  # fmt: skip
    path = _qdq(tmp_path, name, shape, scheme, activations, **options)
    x = torch.randn(32, *shape[1:], generator=torch.Generator().manual_seed(2))
    ours = QdqSimulation(path)(x).numpy()
    (theirs,) = session(path).run(None, {"input": x.numpy()})
    step = output_step(path)
    # equal up to one output step: onnxruntime may run fused int8 kernels that round an int32 sum once
    assert np.abs(ours - theirs).max() <= step * 1.001, (np.abs(ours - theirs).max(), step)
    assert np.abs(ours - theirs).mean() <= 0.05 * step  # and almost always exactly
    assert np.unique(np.round(ours / step)).size > 5  # the outputs are not all one level (a test that can fail)


def test_an_op_the_simulation_does_not_know_is_refused_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Softmax", ["input"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])  # fmt: skip
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="the int8 simulation has no op Softmax"):
        QdqSimulation(tmp_path / "m.onnx")
