"""int8 QDQ models through the TVM build: every conv chain on the int8 compact kernel (compile/lowering.py), the
outputs against our simulation of onnxruntime's QDQ semantics (QdqSimulation) on x86 and under qemu-aarch64, the
manifest's int8 counts and kernel path, and the qemu-arm64 instructions of int8 against fp32 (printed)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import ac_toolchain as ac
from ac_toolchain import native
from ac_toolchain.compile import get_target
from ac_toolchain.compile.lowering import int8_path
from ac_toolchain.compile.tvm_build import compile_onnx, load_host_module
from ac_toolchain.quantize import QdqSimulation, export_fp32, quantize_onnx
from ac_toolchain.quantize.simulate import output_step
from android_bench.device import BenchSettings
from android_bench.qemu import QemuDevice

EM_AARCH64 = 183
MODELS = {  # name: (input shape, build options); resnet18 has the shortcut adds, lenet5 Relu -> MaxPool and Gemm
    "lenet5": ((1, 1, 28, 28), {}),
    "resnet18": ((1, 3, 32, 32), {"width_mult": 0.25}),
}


@pytest.fixture(scope="module")
def qdq(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Per model: the compact fp32 ONNX (BN folded, zero columns) and its int8 QDQ model, filters and columns
    pruned at 0.5, calibrated on random batches."""
    out = {}
    for name, (shape, options) in MODELS.items():
        tmp = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        net = ac.build_model(name, num_classes=10, in_channels=shape[1], input_size=shape[2:], **options)
        x = torch.randn(*shape)
        ac.prune(net, x, 0.5, scheme="filter+column")
        fp32 = export_fp32(ac.compact(net.eval(), x).eval(), x, tmp / "model.fp32.onnx")
        gen = torch.Generator().manual_seed(1)
        calib = [torch.randn(8, *shape[1:], generator=gen) for _ in range(2)]
        out[name] = fp32, quantize_onnx(fp32, tmp / "model.int8.onnx", calib, 2, "minmax", "int8")
    return out


def _quantized_adds(path: Path) -> int:
    """Shortcut adds whose result (after its Relu) is quantized: the ones the kernel fuses. ResNet's last block
    (Add -> Relu -> ReduceMean) is not quantized, so its add stays with TVM in fp32."""
    nodes = onnx.load(str(path)).graph.node
    readers = {name: [n for n in nodes if name in n.input] for n in nodes for name in n.output}

    def quantized(name: str) -> bool:
        return any(r.op_type == "QuantizeLinear" or (r.op_type == "Relu" and quantized(r.output[0]))
                   for r in readers.get(name, []))  # fmt: skip

    return sum(n.op_type == "Add" and quantized(n.output[0]) for n in nodes)


def _convs(path: Path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def _inputs(name: str, n: int) -> np.ndarray:
    shape = MODELS[name][0]
    return torch.randn(n, *shape[1:], generator=torch.Generator().manual_seed(2)).numpy()


def _check_outputs(got: np.ndarray, path: Path, x: np.ndarray) -> None:
    """Within two output steps of onnxruntime's semantics, and the same class: the kernel rounds a conv chain's
    two quantizations (Conv -> Q -> DQ -> Relu -> Q) once (lowering.py's docstring)."""
    want = QdqSimulation(path)(torch.from_numpy(x)).numpy()
    step = output_step(path)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2 * step * 1.001, (np.abs(got - want).max() / step, step)
    assert np.abs(got - want).mean() <= 0.25 * step
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.unique(np.round(want / step)).size > 5  # the outputs are not all one level (a test that can fail)


def _check_manifest(manifest: dict[str, Any], path: Path, target: str) -> None:
    assert manifest["kernel_int8_convolutions"] == _convs(path) > 0
    assert manifest["kernel_convolutions"] == 0  # no conv left to the fp32 kernel
    assert manifest["kernel_int8_path"] == int8_path(get_target(target))
    rows = manifest["kernel_int8_rows"]
    assert 0 < rows["kept"] < rows["total"]  # the pruned columns are skipped


@pytest.mark.parametrize(("name", "target"), [("lenet5", "x86"), ("resnet18", "x86"), ("resnet18", "x86-avx2")])
def test_x86_int8_build_matches_the_qdq_semantics(qdq: dict, tmp_path: Path, name: str, target: str) -> None:
    _, path = qdq[name]
    manifest = compile_onnx(path, get_target(target), tmp_path)
    _check_manifest(manifest, path, target)
    # x86: what the host's own build of the kernel runs; x86-avx2: the path whose packed weights are int16
    assert manifest["kernel_int8_path"] == (native.int8_path("host") if target == "x86" else "avx2")
    assert manifest["kernel_int8_fused_residuals"] == _quantized_adds(path) == (7 if name == "resnet18" else 0)
    assert json.loads((tmp_path / "manifest.json").read_text())["kernel_int8_convolutions"] == _convs(path)
    run = load_host_module(tmp_path)
    x = _inputs(name, 12)
    _check_outputs(np.concatenate([run(x[i : i + 1]) for i in range(len(x))]), path, x)
    _check_outputs(run(x), path, x)  # a batch of 12 through the same module: the batch dimension stays symbolic


def test_arm64_builds_compile_the_dot_product_path(qdq: dict, tmp_path: Path) -> None:
    _, path = qdq["resnet18"]
    manifest = compile_onnx(path, get_target("arm64"), tmp_path)
    _check_manifest(manifest, path, "arm64")
    assert manifest["kernel_int8_path"] == "neon-sdot"
    assert int.from_bytes((tmp_path / "model.so").read_bytes()[18:20], "little") == EM_AARCH64


@pytest.mark.parametrize("name", list(MODELS))
def test_android_arm64_runner_under_qemu(qdq: dict, tmp_path: Path, name: str) -> None:
    """The static runner of the int8 model under qemu-aarch64 (-cpu max: dot product) against the simulation, and
    the instructions of one inference, int8 against the same compact model in fp32 (printed, not asserted)."""
    fp32, path = qdq[name]
    manifest = compile_onnx(path, get_target("android-arm64"), tmp_path / "int8")
    _check_manifest(manifest, path, "android-arm64")
    assert manifest["kernel_int8_path"] == "neon-sdot"
    assert manifest["inputs"][0]["shape"][0] == 1  # the runner's batch of one
    device = QemuDevice()
    x = _inputs(name, 3)
    got = np.concatenate([device.infer(tmp_path / "int8", [x[i : i + 1]])[0] for i in range(len(x))])
    _check_outputs(got, path, x)
    fp32_manifest = compile_onnx(fp32, get_target("android-arm64"), tmp_path / "fp32")
    assert fp32_manifest["kernel_convolutions"] == _convs(fp32) and fp32_manifest["kernel_int8_convolutions"] == 0
    once = BenchSettings(warmup=0, runs=1, min_seconds=0.0, threads=1)
    counts = {kind: device.measure(tmp_path / kind, once)["instructions"] for kind in ("fp32", "int8")}
    print(f"\nqemu-arm64 instructions per inference, {name} compact: fp32 {counts['fp32']:,}, "
          f"int8 {counts['int8']:,} ({counts['int8'] / counts['fp32']:.2f}x)")  # fmt: skip
    assert counts["int8"] > 0 and counts["fp32"] > 0
