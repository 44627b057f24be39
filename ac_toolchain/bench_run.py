"""``ac bench RUN --bench D``: build a run's dense and compressed models (and its int8 compressed model, where the
run was quantized) as static runners for the device (its compile target comes from ac_toolchain/platform.py),
measure them there (android_bench), check the outputs against torch (int8: against our simulation) where the
device runs on this machine, and write ``<run>/bench/<device>.json`` plus the speed-up into the run's report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ac_toolchain import config as cfgmod
from ac_toolchain.compile import Target
from ac_toolchain.compile.tvm_build import TVM_ONNX, compile_onnx, sha256
from ac_toolchain.context import build, example_input
from ac_toolchain.errors import CheckpointError, DeviceError
from ac_toolchain.platform import bench_row, runner_target
from ac_toolchain.quantize.simulate import QdqSimulation, output_step
from ac_toolchain.report.records import BenchEntry, read_report
from ac_toolchain.report.render import write_report
from ac_toolchain.runs import load_state_dict, safe_name
from android_bench.bench import baseline_from, bench, check_gate, speedup_table, write_json
from android_bench.device import BenchSettings, Device
from android_bench.devices import get_device
from android_bench.local import infer

VARIANTS = {"dense": "dense.onnx", "compressed": TVM_ONNX}  # what each variant compiles, inside the run
INT8 = "compressed int8"  # a third variant where the run was quantized (--quantize int8, ac quantize RUN)
INT8_ONNX = "int8/model.int8.onnx"
OUTPUT_TOLERANCE = 1e-4  # max |runner - torch| on the logits
# max |int8 runner - simulation| on the logits, in output quantization steps: the kernel rounds each conv chain once
# where the QDQ graph rounds twice (Conv -> Q -> DQ -> Relu -> Q), a step of the later scale at most per layer,
# and those steps add up over a deep model's layers; a wrong build is off by far more
INT8_STEPS = 4.0
QUICK = BenchSettings(warmup=3, runs=20, min_seconds=0.5)  # the bench at the end of `ac compress`


def is_built(out_dir: Path, onnx_path: Path, target: Target) -> bool:
    """Whether ``out_dir`` holds a runner of ``onnx_path`` as it is now, for ``target``."""
    manifest = out_dir / "manifest.json"
    if not (manifest.is_file() and (out_dir / "runner").is_file()):
        return False
    made = json.loads(manifest.read_text())
    return (made.get("source_sha256"), made.get("link"), made.get("target")) == (sha256(onnx_path), "static",
                                                                                  target.name)  # fmt: skip


def build_artifact(onnx_path: Path, target: Target, out_dir: Path) -> Path:
    """Compile ``onnx_path`` into ``out_dir/{runner,manifest.json}`` unless it is there already."""
    if not is_built(out_dir, onnx_path, target):
        compile_onnx(onnx_path, target, out_dir)
    return out_dir


def run_artifacts(run_dir: Path, target: Target) -> dict[str, Path]:
    missing = [name for name in VARIANTS.values() if not (run_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir} has no {' or '.join(missing)}; bench a finished `ac compress` run "
            f"(a run from before dense.onnx existed: `ac export {run_dir / 'dense.pt'} --out {run_dir / 'dense.onnx'}`)"
        )
    root = run_dir / "bench" / "artifacts"
    artifacts = {v: root / f"{target.name}-{v}" for v in VARIANTS}
    if is_built(run_dir / target.name, run_dir / VARIANTS["compressed"], target):
        artifacts["compressed"] = run_dir / target.name  # `ac compress --target android-arm64` built it already
    sources = dict(VARIANTS)
    if (run_dir / INT8_ONNX).is_file():  # its convs run on the int8 kernel (compile/lowering.py)
        artifacts[INT8], sources[INT8] = root / f"{target.name}-int8", INT8_ONNX
    return {v: build_artifact(run_dir / sources[v], target, out) for v, out in artifacts.items()}


def torch_outputs(run_dir: Path, x: torch.Tensor, num_classes: int) -> np.ndarray:
    model = build(cfgmod.load(run_dir / "config.toml"), num_classes)
    load_state_dict(model, run_dir / "compressed.pt")
    with torch.no_grad():
        return model.eval()(x).numpy()


NOT_READ_BACK = {"status": "not checked: outputs cannot be read back from this device"}


def _read_back(run_dir: Path, artifact: Path, device: Device) -> tuple[torch.Tensor, np.ndarray] | None:
    """The run's example input and the artifact's output for it where the device runs here, else None."""
    read_back = bench_row(device).read_back
    if read_back is None:
        return None
    x = example_input(cfgmod.load(run_dir / "config.toml"))
    return x, infer(artifact, [x.numpy()], list(read_back))[0]


def check_outputs(run_dir: Path, artifact: Path, device: Device) -> dict[str, Any]:
    """Run the compressed artifact on the run's example input where it runs and compare with torch."""
    read = _read_back(run_dir, artifact, device)
    if read is None:
        return dict(NOT_READ_BACK)
    x, got = read
    diff = float(np.abs(got - torch_outputs(run_dir, x, got.shape[-1])).max())
    if diff > OUTPUT_TOLERANCE:
        raise DeviceError(f"{artifact}: outputs on {device.name} differ from torch by {diff:.2e} "
                          f"(> {OUTPUT_TOLERANCE})")  # fmt: skip
    return {"status": "ok", "max_abs_diff": diff, "against": "torch, compressed.pt, the run's example input"}


def check_int8_outputs(run_dir: Path, artifact: Path, device: Device) -> dict[str, Any]:
    """The int8 artifact against our simulation of its QDQ model on the run's example input, in output steps (the
    kernel rounds a conv chain's two quantizations once: compile/lowering.py), within :data:`INT8_STEPS`."""
    read = _read_back(run_dir, artifact, device)
    if read is None:
        return dict(NOT_READ_BACK)
    x, got = read
    want, step = QdqSimulation(run_dir / INT8_ONNX)(x).numpy(), output_step(run_dir / INT8_ONNX)
    steps = float(np.abs(got - want).max() / step)
    if steps > INT8_STEPS:
        raise DeviceError(f"{artifact}: int8 outputs on {device.name} differ from the simulation by {steps:.2f} "
                          f"output steps (> {INT8_STEPS})")  # fmt: skip
    return {"status": "ok", "max_steps": round(steps, 3), "against": f"our simulation of {INT8_ONNX}"}


def bench_json(run_dir: Path, device: str) -> Path:
    return run_dir / "bench" / f"{safe_name(device)}.json"


def report_entry(run_dir: Path, result: dict[str, Any]) -> BenchEntry:
    """What the run's report keeps of a bench (report.json "bench" → device → this)."""
    return BenchEntry(result["metric"], result["speedup"], speedup_table(result), result.get("output_check"),
                      str(bench_json(run_dir, result["device"])))  # fmt: skip


def update_report(run_dir: Path, result: dict[str, Any]) -> None:
    """Add this bench to report.json's "bench" and re-render report.md from it (a run still going has none)."""
    path = run_dir / "report.json"
    if not path.is_file():
        return
    report = read_report(path)
    report.bench[result["device"]] = report_entry(run_dir, result)
    write_report(run_dir, report, plots=False)


def bench_run(
    run_dir: Path, device_name: str, settings: BenchSettings, check: Path | None = None, tolerance: float = 0.02,
    save_baseline: Path | None = None, cleanup: bool = False, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Bench ``run_dir`` on ``device_name``; with ``check``, raise DeviceError when the gate fails. ``save_baseline``
    refuses an existing file unless ``force``; the new file's history keeps the old one's figures."""
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.toml); give the folder `ac compress` made")
    baseline = _read_baseline(check) if check else None
    previous = _replaced_baseline(save_baseline, force) if save_baseline else None  # refused before any bench
    device = get_device(device_name)
    try:
        artifacts = run_artifacts(run_dir, runner_target(device))
        out = bench_json(run_dir, device.name)
        result = bench(device, artifacts, settings, out)
        result["output_check"] = check_outputs(run_dir, artifacts["compressed"], device)
        if INT8 in artifacts:
            result["output_check_int8"] = check_int8_outputs(run_dir, artifacts[INT8], device)
        write_json(out, result)
        update_report(run_dir, result)
        if cleanup and hasattr(device, "cleanup"):
            device.cleanup()
    finally:
        device.close()
    if save_baseline:
        write_json(save_baseline, baseline_from(result, previous))
    if baseline is not None:
        failures = check_gate(result, baseline, tolerance)
        result["gate"] = {"baseline": str(check), "tolerance": tolerance, "failures": failures}
        if failures:
            raise DeviceError(f"latency gate failed against {check}: " + "; ".join(failures))
    return result


def _read_baseline(path: Path, flag: str = "--check", fix: str = "write one with --save-baseline") -> dict[str, Any]:
    try:
        baseline = json.loads(path.read_text())
        missing = {"variants", "metric", "device"} - set(baseline)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{flag} {path}: not a baseline file ({exc}); {fix}") from None
    if missing:
        raise CheckpointError(f"{flag} {path}: not a baseline file (no {', '.join(sorted(missing))}); {fix}")
    return baseline


def _replaced_baseline(path: Path, force: bool) -> dict[str, Any] | None:
    """The baseline that ``--save-baseline path`` would replace (None: no file there); an existing file is refused
    without ``force``, and with it one that is not a baseline (it is not ours to overwrite)."""
    if not path.exists():
        return None
    if not force:
        raise CheckpointError(f"--save-baseline {path}: the file exists; add --force to overwrite it (its figures "
                              "are kept in the new file's history)")  # fmt: skip
    return _read_baseline(path, "--save-baseline", "remove it or save the baseline elsewhere")
