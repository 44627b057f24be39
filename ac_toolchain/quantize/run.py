"""``ac quantize RUN``: the int8 model of a finished run, and how it compares with the fp32 one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ac_toolchain import config as cfgmod
from ac_toolchain.compact import compact
from ac_toolchain.context import build, console, open_run
from ac_toolchain.errors import CheckpointError
from ac_toolchain.quantize.ptq import evaluate_onnx, export_fp32, quantize_onnx
from ac_toolchain.runs import atomic_write_bytes, load_state_dict, write_record
from ac_toolchain.train import make_loader

NEEDED = ("config.toml", "compressed.pt", "records/evaluate-compressed.json")  # what a finished run has


@dataclass
class QuantizeRecord:
    """``<run>/int8/quantize.json``: fp32 vs int8 of the run's compact model, on the run's test split."""

    method: str  # the activation calibrator
    activations: str  # int8 or uint8, per tensor
    weights: str
    calib_batches: int  # training batches actually used
    calib_batch_size: int
    test_images: int
    top1_fp32: float  # the fp32 ONNX that was quantized (BN folded, columns as zero columns)
    top1_int8: float
    bytes_fp32: int
    bytes_int8: int
    size_ratio: float  # bytes_fp32 / bytes_int8
    fp32_path: str
    int8_path: str


def check_finished(run_dir: Path) -> None:
    """One clear error unless ``run_dir`` holds a finished run's compressed model."""
    missing = [name for name in NEEDED if not (run_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"{run_dir} is not a finished run (no {', '.join(missing)}); pass a run directory "
                              "that `ac compress` completed")  # fmt: skip


def quantize_run(run_dir: Path, calib_batches: int = 8, method: str = "percentile",
                 activations: str = "int8") -> QuantizeRecord:  # fmt: skip
    """Quantize the run's compressed model: writes ``<run>/int8/model.fp32.onnx``, ``model.int8.onnx`` and,
    last, ``quantize.json`` (all atomically)."""
    run_dir = Path(run_dir)
    check_finished(run_dir)
    cfg = cfgmod.load(run_dir / "config.toml")
    run = open_run(cfg, run_dir=run_dir)
    model = build(cfg, run.splits.num_classes)
    load_state_dict(model, run_dir / "compressed.pt")
    small = compact(model.eval(), run.example).eval()
    calib = make_loader(run.splits.train, cfg.train.batch_size, shuffle=True, seed=cfg.run.seed)
    used = min(calib_batches, len(calib))
    out = run_dir / "int8"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # written here, then moved into place whole
        fp32 = export_fp32(small, run.example, Path(tmp) / "model.fp32.onnx")
        int8 = quantize_onnx(fp32, Path(tmp) / "model.int8.onnx", calib, used, method, activations)
        test = make_loader(run.splits.test, 256, shuffle=False)
        console.print(f"evaluating fp32 and int8 ({method}) on {len(run.splits.test)} test images")
        acc32, acc8 = evaluate_onnx(fp32, test), evaluate_onnx(int8, test)
        for path in (fp32, int8):
            atomic_write_bytes(path.read_bytes(), out / path.name)
    bytes32, bytes8 = (out / "model.fp32.onnx").stat().st_size, (out / "model.int8.onnx").stat().st_size
    record = QuantizeRecord(method, activations, "int8 symmetric per output channel", used, cfg.train.batch_size,
                            len(run.splits.test), round(acc32, 6), round(acc8, 6), bytes32, bytes8,
                            round(bytes32 / bytes8, 3), str(out / fp32.name), str(out / int8.name))  # fmt: skip
    write_record(record, out / "quantize.json")
    return record
