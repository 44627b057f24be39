"""Post-training quantization: the QDQ structure around every conv and linear, per-channel int8 weights,
onnxruntime's int8 accuracy next to the fp32 model's, and the file size."""

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

import ac_toolchain as ac
from ac_toolchain.errors import ConfigError
from ac_toolchain.quantize import evaluate_onnx, export_fp32, predict_onnx, quantize_onnx
from ac_toolchain.train import make_loader


def _compact(name: str, shape: tuple[int, ...], rate: float, **options: Any) -> nn.Module:
    torch.manual_seed(0)
    net = ac.build_model(name, num_classes=10, in_channels=shape[1], input_size=shape[2:], **options)
    x = torch.randn(*shape)
    ac.prune(net, x, rate, scheme="filter")
    return ac.compact(net.eval(), x).eval()


def _batches(shape: tuple[int, ...], n: int, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(size, *shape[1:], generator=gen), torch.randint(0, 10, (size,), generator=gen))
            for _ in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def trained_lenet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """LeNet-5 trained one epoch on mnist-mini, pruned at 0.5 (filters), compacted; its fp32 and int8 ONNX."""
    torch.manual_seed(0)
    splits = ac.load_dataset("mnist-mini", (1, 28, 28), seed=0)
    net = ac.build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for x, y in make_loader(splits.train, 64, shuffle=True, seed=0):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    example = torch.randn(1, 1, 28, 28)
    ac.prune(net, example, 0.5, scheme="filter")
    out = tmp_path_factory.mktemp("lenet")
    fp32 = export_fp32(ac.compact(net.eval(), example), example, out / "fp32.onnx")
    calib = make_loader(splits.train, 64, shuffle=True, seed=1)
    int8 = quantize_onnx(fp32, out / "int8.onnx", calib, 4, "percentile")
    return fp32, int8, make_loader(splits.test, 250, shuffle=False)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def test_every_conv_and_linear_reads_dequantized_int8_inputs_and_per_channel_weights(
    trained_lenet: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    shape = (1, 3, 32, 32)
    fp32 = export_fp32(_compact("resnet18", shape, 0.5, width_mult=0.25), torch.randn(*shape), tmp_path / "r.onnx")
    for path in (trained_lenet[1], quantize_onnx(fp32, tmp_path / "r8.onnx", _batches(shape, 2), 2, "minmax")):
        graph = onnx.load(str(path)).graph
        made, inits = _producers(graph), {i.name: i for i in graph.initializer}
        layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        assert layers and {n.op_type for n in layers} >= {"Conv", "Gemm"}
        for node in layers:
            act, weight = made[node.input[0]], made[node.input[1]]
            assert act.op_type == weight.op_type == "DequantizeLinear"
            assert made[act.input[0]].op_type == "QuantizeLinear"  # the activation: quantized per tensor
            assert inits[act.input[1]].dims == []
            q, scale, zero = (inits[name] for name in weight.input)  # the weight: int8 initialiser, per channel
            channels = q.dims[0]  # Conv [out, in, kh, kw]; Gemm [out, in] (transB)
            assert q.data_type == TensorProto.INT8 and scale.dims == [channels] and zero.dims == [channels]
            assert not numpy_helper.to_array(zero).any()  # symmetric
        fp32_weights = [i for i in graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) > 1]
        assert not fp32_weights


def test_int8_top1_matches_fp32_on_mnist_mini(trained_lenet: tuple[Path, Path, Any]) -> None:
    fp32, int8, test = trained_lenet
    p32, labels = predict_onnx(fp32, test)
    p8, _ = predict_onnx(int8, test)
    acc32, acc8 = evaluate_onnx(fp32, test), evaluate_onnx(int8, test)
    assert acc32 == pytest.approx(float((p32 == labels).mean())) and acc32 > 0.5  # trained, far above chance
    assert abs(acc8 - acc32) <= 0.01  # within one point on 500 test images
    assert (p8 == p32).mean() >= 0.97  # and the same answer image by image


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_each_calibrator_gives_a_model_that_agrees_with_fp32(
    trained_lenet: tuple[Path, Path, Any], method: str, tmp_path: Path
) -> None:
    fp32, _, test = trained_lenet
    int8 = quantize_onnx(fp32, tmp_path / "q.onnx", [b for b, _ in zip(test, range(2), strict=False)], 2, method)
    assert (predict_onnx(int8, test)[0] == predict_onnx(fp32, test)[0]).mean() >= 0.95


def test_int8_file_is_at_least_3_5x_smaller(tmp_path: Path) -> None:
    shape = (1, 3, 32, 32)
    small = _compact("vgg16", shape, 0.1, width_mult=0.25)  # ~0.9 M weights: the per-layer overhead is small
    fp32 = export_fp32(small, torch.randn(*shape), tmp_path / "v.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "v8.onnx", _batches(shape, 2), 2, "minmax")
    assert fp32.stat().st_size / int8.stat().st_size >= 3.5
    x = _batches(shape, 1)[0][0]
    with torch.no_grad():
        want = small(x).argmax(1).numpy()
    assert np.array_equal(predict_onnx(fp32, [(x, want)])[0], want)  # the fp32 ONNX is the compact model


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"method": "kl"}, "calibration 'kl' is not one of: minmax, percentile, entropy"),
    ({"activations": "int4"}, "activations 'int4' are not one of: int8, uint8"),
    ({"calib_batches": 0}, "calibrate on at least one batch"),
])  # fmt: skip
def test_bad_settings_are_one_clear_error(kwargs: dict[str, Any], needle: str, tmp_path: Path) -> None:
    args = {"batches": [], "calib_batches": 1, **kwargs}
    with pytest.raises(ConfigError, match=needle):
        quantize_onnx(tmp_path / "none.onnx", tmp_path / "q.onnx", **args)
