"""The C++ runner on this machine: the model linked in as a system library, outputs equal torch's, the JSON-lines
protocol, clear errors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ac_toolchain as ac
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.compile import get_target
from ac_toolchain.compile.tvm_build import compile_onnx
from ac_toolchain.errors import DeviceError
from ac_toolchain.export import export_onnx
from android_bench.device import BenchSettings
from android_bench.local import infer, run_runner
from android_bench.protocol import parse_runner_output, runner_command

X86_STATIC = dataclasses.replace(get_target("x86"), link="static")


@pytest.fixture(scope="module")
def host_runner(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A filter+column pruned LeNet-5 (column-pruned convs as zero columns) in a static host runner."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 28, 28)
    model = ac.build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28)).eval()
    ac.prune(model, x, 0.6, "filter+column")
    folder = tmp_path_factory.mktemp("host-runner")
    onnx_path = export_onnx(expand_columns(compact(model, x).eval()), x, folder / "model.tvm.onnx")
    manifest = compile_onnx(onnx_path, X86_STATIC, folder / "artifact")
    assert manifest["link"] == "static" and set(manifest["files"]) == {"runner"}
    assert manifest["kernel_rows"]["kept"] < manifest["kernel_rows"]["total"]  # columns really are skipped
    return model, folder / "artifact"


def test_outputs_equal_torch(host_runner: tuple) -> None:
    model, artifact = host_runner
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((1, 1, 28, 28)).astype("float32")
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        (got,) = infer(artifact, [x])
        assert got.shape == (1, 10)
        assert np.abs(got - want).max() <= 1e-4


def test_runner_prints_every_sample_and_honours_min_seconds(host_runner: tuple) -> None:
    artifact = host_runner[1]
    settings = BenchSettings(warmup=2, runs=5, min_seconds=0.0, threads=1, seed=7)
    out = parse_runner_output(run_runner(artifact, runner_command(settings)).splitlines())
    assert len(out["samples_us"]) == out["done"]["runs"] == 5
    assert all(us > 0 for us in out["samples_us"])
    assert out["start"]["runner"] == "ac_runner" and out["start"]["warmup"] == 2 and out["start"]["seed"] == 7
    timed = parse_runner_output(run_runner(artifact, runner_command(BenchSettings(0, 1, 0.2, 1))).splitlines())
    assert timed["done"]["total_us"] >= 200_000 and len(timed["samples_us"]) > 1  # ran on until 0.2 s passed


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--input", "short.bin"], "holds 12 bytes; input input needs 3136 (raw little-endian float32)"),
        (["--manifest", "broken.json"], "broken.json is not valid JSON"),
        (["--runs", "0"], "flag values out of range"),
        (["--bogus", "1"], "unknown flag --bogus"),
    ],
)
def test_bad_input_is_one_clear_error(host_runner: tuple, args: list[str], needle: str) -> None:
    artifact = host_runner[1]
    (artifact / "short.bin").write_bytes(b"\0" * 12)
    (artifact / "broken.json").write_text("{not json")
    with pytest.raises(DeviceError, match="exited with status 1") as err:
        run_runner(artifact, ["./runner", "--manifest", "manifest.json", *args])
    assert needle in str(err.value)


def test_manifest_lists_the_inputs_the_runner_fills(host_runner: tuple) -> None:
    manifest = json.loads((host_runner[1] / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}]
