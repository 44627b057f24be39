"""TVM builds: x86 end to end against torch, arm64 cross-compile, OpenCL codegen, manifest, toolchain errors."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

import ac_toolchain as ac
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile import get_target
from ac_toolchain.compile.tvm_build import compile_onnx, load_host_module
from ac_toolchain.errors import TargetError
from ac_toolchain.export import export_onnx

EM_X86_64, EM_AARCH64 = 62, 183


def _pruned_lenet(seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(1, 1, 28, 28)
    model = ac.build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28)).eval()
    ac.prune(model, x, 0.6, "filter+column")
    return model, x


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A column- and filter-pruned LeNet-5, compacted and exported once for every test here."""
    model, x = _pruned_lenet(0)
    path = export_onnx(compact(model, x).eval(), x, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


@pytest.fixture(scope="module")
def zero_columns(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """The same kind of model in the form the compile stage imports: column-pruned convs as zero columns."""
    model, x = _pruned_lenet(1)
    small = expand_columns(compact(model, x).eval())
    return model, export_onnx(small, x, tmp_path_factory.mktemp("onnx") / "model.tvm.onnx")


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize("target", ["x86", "x86-avx2"])
def test_x86_build_matches_torch_and_manifest_is_complete(pruned: tuple, tmp_path: Path, target: str) -> None:
    model, onnx_path = pruned
    manifest = compile_onnx(onnx_path, get_target(target), tmp_path)
    assert elf_machine(tmp_path / "model.so") == EM_X86_64
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype("float32")
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(load_host_module(tmp_path)(x) - want).max() <= 1e-4
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["target"] == target and manifest["tvm_version"].startswith("0.27")
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    digest = hashlib.sha256((tmp_path / "model.so").read_bytes()).hexdigest()
    assert manifest["files"]["model.so"]["sha256"] == digest
    assert manifest["command"]
    convs = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    assert manifest["kernel_convolutions"] == len(convs) > 0  # every conv runs on the kernels/ kernel


def test_zero_columns_become_the_kernels_kept_rows(zero_columns: tuple, tmp_path: Path) -> None:
    model, onnx_path = zero_columns
    manifest = compile_onnx(onnx_path, get_target("x86"), tmp_path)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    convs = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    columns = [weights[n.input[1]].transpose(0, 2, 3, 1).reshape(weights[n.input[1]].shape[0], -1) for n in convs]
    nonzero = sum(int(np.any(c != 0, axis=0).sum()) for c in columns)
    assert manifest["kernel_rows"] == {"kept": nonzero, "total": sum(c.shape[1] for c in columns)}
    assert nonzero < manifest["kernel_rows"]["total"]  # columns really were skipped
    x = np.random.default_rng(1).standard_normal((2, 1, 1, 28, 28)).astype("float32")
    run = load_host_module(tmp_path)
    for xi in x:
        got = run(xi)
        with torch.no_grad():
            assert np.abs(got - model(torch.from_numpy(xi)).numpy()).max() <= 1e-4
        assert np.array_equal(run(np.asfortranarray(xi)), got) and got.flags.owndata  # any layout in, a copy out


def test_residual_adds_run_inside_the_kernel(tmp_path: Path) -> None:
    """A ResNet block's `relu(conv + bias + shortcut)` becomes one kernel call (identity and 1x1-conv shortcuts), no
    bias add or ReLU is left beside the kernel calls, and the compiled model still equals torch."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from ac_toolchain.compile.lowering import route_convolutions
    from ac_toolchain.zoo.resnet import BasicBlock

    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 1, 1), torch.nn.ReLU(), BasicBlock(8, 8, 1), BasicBlock(8, 16, 2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4),
    )  # fmt: skip
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(1, 3, 12, 12)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    routed, _ = route_convolutions(from_onnx(onnx.load(str(path)), keep_params_in_input=False))
    ops = [b.value.op.name for block in routed["main"].body.blocks for b in block.bindings
           if isinstance(b.value, tvm.relax.Call) and isinstance(b.value.op, tvm.ir.Op)]  # fmt: skip
    assert ops.count("relax.nn.relu") == 0 and ops.count("relax.add") == 1  # left: the linear layer's bias
    manifest = compile_onnx(path, get_target("x86"), tmp_path / "x86")
    assert manifest["kernel_convolutions"] == 6 and manifest["kernel_fused_residuals"] == 2
    with torch.no_grad():
        assert np.abs(load_host_module(tmp_path / "x86")(x.numpy()) - model(x).numpy()).max() <= 1e-4


def test_arm64_cross_compiles_to_an_aarch64_library(pruned: tuple, tmp_path: Path) -> None:
    manifest = compile_onnx(pruned[1], get_target("arm64"), tmp_path)
    assert elf_machine(tmp_path / "model.so") == EM_AARCH64
    assert "aarch64" in manifest["tvm_target"] and "neon" in manifest["tvm_target"]


def test_opencl_writes_kernel_source(pruned: tuple, tmp_path: Path) -> None:
    manifest = compile_onnx(pruned[1], get_target("opencl"), tmp_path)
    source = (tmp_path / "kernels.cl").read_text()
    assert source.count("__kernel void") >= 4 and "get_local_id(0)" in source  # thread-bound kernels
    assert set(manifest["files"]) == {"model.so", "kernels.cl"}


def test_missing_cross_compiler_says_how_to_install(pruned: tuple, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(TargetError, match=r"aarch64-linux-gnu-g\+\+, not found; install it with: bash scripts/"):
        compile_onnx(pruned[1], get_target("arm64"), tmp_path)
