"""The int8 comparison of a run (the Quantize stage, and ``ac quantize RUN`` for a finished run): the dense and
the compact model, each in fp32 and in int8, with their accuracy, file bytes and host latency."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from ac_toolchain import config as cfgmod
from ac_toolchain.compact import compact
from ac_toolchain.config import QuantizeConfig
from ac_toolchain.context import Run, console, load_model, open_run
from ac_toolchain.errors import CheckpointError
from ac_toolchain.quantize.ptq import evaluate_onnx, export_fp32, host_ms, quantize_onnx
from ac_toolchain.quantize.qat import qat
from ac_toolchain.quantize.simulate import simulate_predictions
from ac_toolchain.report.records import INT8_VARIANTS, Int8Variant, QuantizeRecord
from ac_toolchain.report.render import rerender
from ac_toolchain.runs import atomic_write_bytes, write_record
from ac_toolchain.train import FitSettings, make_loader

NEEDED = ("config.toml", "dense.pt", "compressed.pt", "records/evaluate-compressed.json")  # of a finished run
FILES = dict(zip(INT8_VARIANTS, ("dense.fp32.onnx", "dense.int8.onnx", "model.fp32.onnx", "model.int8.onnx"),
                 strict=True))  # fmt: skip
QAT = "compact QAT"  # with quantize.qat_epochs: the compact model fine-tuned behind fake quantization
ALL_FILES = {**FILES, f"{QAT} fp32": "model-qat.fp32.onnx", f"{QAT} int8": "model-qat.int8.onnx"}


def record_path(run_dir: Path) -> Path:
    return run_dir / "records" / "quantize.json"


def int8_dir(run_dir: Path) -> Path:
    return run_dir / "int8"


def quantize_models(run: Run, dense: nn.Module, small: nn.Module, settings: QuantizeConfig,
                    activations: str = "int8") -> QuantizeRecord:  # fmt: skip
    """Write ``<run>/int8/`` (the fp32 ONNX of the dense and the compact model and their int8 QDQ models, with
    ``settings.qat_epochs`` also the int8 model of the compact one after quantization-aware fine-tuning; each file
    atomically) and return their comparison on the run's test split."""
    cfg, out = run.cfg, int8_dir(run.dir)
    out.mkdir(exist_ok=True)
    used = min(settings.calib_batches, -(-len(run.splits.train) // cfg.train.batch_size))  # batches there are
    test = make_loader(run.splits.test, 256, shuffle=False)
    models = {"dense": dense, "compact": small}
    if settings.qat_epochs:
        console.print(f"quantization-aware fine-tuning: {settings.qat_epochs} epochs")
        fit = FitSettings.from_config(cfg.train, epochs=settings.qat_epochs, lr=settings.qat_lr)
        models[QAT] = qat(small, run.splits.train, fit, run.device, seed=cfg.run.seed)
    files = {name: file for name, file in ALL_FILES.items() if name.rsplit(" ", 1)[0] in models}
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # written here, then moved into place whole
        for kind, model in models.items():
            fp32 = export_fp32(model, run.example, Path(tmp) / ALL_FILES[f"{kind} fp32"])
            calib = make_loader(run.splits.train, cfg.train.batch_size, shuffle=True, seed=cfg.run.seed)
            quantize_onnx(fp32, Path(tmp) / ALL_FILES[f"{kind} int8"], calib, used, settings.calibration, activations)
        files.pop(f"{QAT} fp32", None)  # the QAT model's fp32 form is only the step towards its int8 one
        console.print(f"int8 ({settings.calibration}): evaluating {len(files)} models on {len(run.splits.test)} test "
                      "images")  # fmt: skip
        variants = {name: _variant(Path(tmp) / file, out / file, test, run) for name, file in files.items()}
        preds, labels = simulate_predictions(Path(tmp) / FILES["compact int8"], test)
        for file in files.values():
            atomic_write_bytes((Path(tmp) / file).read_bytes(), out / file)
    for stale in set(ALL_FILES.values()) - set(files.values()):  # of an earlier quantization with other settings
        (out / stale).unlink(missing_ok=True)
    ratio = variants["compact fp32"].bytes / variants["compact int8"].bytes
    return QuantizeRecord(settings.calibration, activations, "int8 symmetric per output channel", used,
                          cfg.train.batch_size, len(run.splits.test), variants, round(ratio, 3),
                          round(float((preds == labels).mean()), 6) if len(labels) else None)  # fmt: skip


def _variant(path: Path, final: Path, test: DataLoader[Any], run: Run) -> Int8Variant:
    top1 = evaluate_onnx(path, test)
    return Int8Variant(round(top1, 6), path.stat().st_size, round(host_ms(path, run.example), 4), str(final))


def check_finished(run_dir: Path) -> None:
    """One clear error unless ``run_dir`` holds a finished run's dense and compressed models."""
    missing = [name for name in NEEDED if not (run_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"{run_dir} is not a finished run (no {', '.join(missing)}); pass a run directory "
                              "that `ac compress` completed")  # fmt: skip


def quantize_run(run_dir: Path, settings: QuantizeConfig | None = None, activations: str = "int8") -> QuantizeRecord:
    """Quantize a finished run: ``<run>/int8/`` and ``records/quantize.json`` (last), and the report re-rendered
    with its int8 section when the run has one."""
    run_dir = Path(run_dir)
    check_finished(run_dir)
    cfg = cfgmod.load(run_dir / "config.toml")
    settings = settings or cfg.quantize
    run = open_run(cfg, run_dir=run_dir)
    small = compact(load_model(run, "compressed.pt"), run.example).eval()
    record = quantize_models(run, load_model(run, "dense.pt"), small, settings, activations)
    write_record(record, record_path(run_dir))
    rerender(run_dir, quantize=record)
    return record
