"""--tune-trials: MetaSchedule tuning of the ops left to TVM, logged in the run and applied by later builds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ac_toolchain.compile import get_target
from ac_toolchain.compile.tuning import RECORDS, TUNING_DIR, check_tunable
from ac_toolchain.compile.tvm_build import compile_onnx, load_host_module, sha256
from ac_toolchain.errors import TargetError
from ac_toolchain.export import export_onnx


def test_tuning_a_target_that_does_not_run_here_is_refused() -> None:
    with pytest.raises(TargetError, match=r"tunes only targets that run here \(x86\); target arm64 cannot be tuned"):
        check_tunable(get_target("arm64"), 4)
    check_tunable(get_target("arm64"), 0)  # no tuning asked: nothing to refuse
    with pytest.raises(TargetError, match="must be >= 0"):
        check_tunable(get_target("x86"), -1)


def test_tuned_build_matches_torch_keeps_its_log_and_later_builds_apply_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 10)
    ).eval()
    x = torch.randn(1, 1, 8, 8)
    onnx_path = export_onnx(model, x, tmp_path / "model.onnx")
    out = tmp_path / "x86"
    manifest = compile_onnx(onnx_path, get_target("x86"), out, tune_trials=2)
    records = (out / TUNING_DIR / RECORDS).read_text().splitlines()
    assert len(records) == 2 and all(json.loads(r) for r in records)  # two candidates measured and logged
    assert manifest["tuning"]["trials"] == 2 and "MetaSchedule-tuned" in manifest["schedules"]
    assert '"num-cores"' in manifest["tvm_target"]
    x_np = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype("float32")
    with torch.no_grad():
        want = model(torch.from_numpy(x_np)).numpy()
    assert np.abs(load_host_module(out)(x_np) - want).max() <= 1e-4
    first = sha256(out / "model.so")
    again = compile_onnx(onnx_path, get_target("x86"), out)  # no trials: the records in the run are applied
    assert again["tuning"]["trials"] == 0 and sha256(out / "model.so") == first
