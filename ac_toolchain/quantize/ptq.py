"""Post-training int8 quantization of an ONNX model with onnxruntime's ``quantize_static`` (QDQ format).

Weights: int8, symmetric, one scale per output channel. Activations: int8 or uint8, one scale and zero point
per tensor, calibrated on a few training batches by one of :data:`CALIBRATIONS`. Only convs and linears are
quantized (QuantizeLinear / DequantizeLinear around each Conv, Gemm and MatMul); every other op stays fp32.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    quantize_static,
    save_tensors_data,
)
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain.compact import expand_columns
from ac_toolchain.errors import ConfigError
from ac_toolchain.export import export_onnx
from ac_toolchain.export.onnx import INPUT_NAME
from ac_toolchain.quantize.fold import fold_bn

# the calibrators by their config names (quantize.calibration): the observed range; the 99.999th percentile of |x|
# (drops rare outliers); the range minimising the KL divergence of the histogram
CALIBRATIONS = dict(zip(cfgmod.CALIBRATIONS, (CalibrationMethod.MinMax, CalibrationMethod.Percentile,
                                              CalibrationMethod.Entropy), strict=True))  # fmt: skip
ACTIVATIONS = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
# quantize_static's entropy calibrator histograms 128 bins into 128 levels, so it never clips (it equals minmax);
# ours uses 2048 bins, as TensorRT's entropy calibration does, through onnxruntime's own calibrator
ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 256}


class BatchReader(CalibrationDataReader):
    """onnxruntime's calibration input: the first ``limit`` image batches of ``batches`` (``(x, y)`` or ``x``)."""

    def __init__(self, batches: Iterable[Any], limit: int) -> None:
        self._batches: Iterator[Any] = itertools.islice(iter(batches), limit)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return {INPUT_NAME: x.numpy().astype(np.float32)}


def export_fp32(compact_model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The fp32 ONNX that gets quantized: column-pruned convs as plain convs with zero columns, BN folded, any
    batch size. The exporter's debug notes (source stack traces per node) are dropped: they are not the model."""
    export_onnx(fold_bn(expand_columns(compact_model)), example, path, dynamic_batch=True)
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))
    return path


def quantize_onnx(fp32: Path, out: Path, batches: Iterable[Any], calib_batches: int, method: str = "percentile",
                  activations: str = "int8") -> Path:  # fmt: skip
    """Write the QDQ int8 model of ``fp32`` (a dynamic-batch ONNX) to ``out``, calibrated on ``calib_batches``
    of ``batches``."""
    if method not in CALIBRATIONS:
        raise ConfigError(f"calibration {method!r} is not one of: {', '.join(CALIBRATIONS)}")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"activations {activations!r} are not one of: {', '.join(ACTIVATIONS)}")
    if calib_batches < 1:
        raise ConfigError(f"calib_batches = {calib_batches}: calibrate on at least one batch")
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = BatchReader(batches, calib_batches)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
        cache = Path(tmp) / "ranges.json"  # quantize_static reads activation ranges from here when it exists
        if method == "entropy":
            _entropy_ranges(fp32, reader, cache, Path(tmp) / "augmented.onnx")
        quantize_static(
            str(fp32), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True, weight_type=QuantType.QInt8, activation_type=ACTIVATIONS[activations],
            calibrate_method=CALIBRATIONS[method], calibration_cache_path=cache,
        )  # fmt: skip
    return out


def _entropy_ranges(fp32: Path, reader: BatchReader, cache: Path, scratch: Path) -> None:
    """Activation ranges by onnxruntime's entropy calibrator with :data:`ENTROPY_BINS`, saved to ``cache``."""
    calibrator = create_calibrator(fp32, QUANTIZED_OPS, augmented_model_path=str(scratch),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options=ENTROPY_BINS)  # fmt: skip
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def session(path: Path) -> ort.InferenceSession:
    """onnxruntime on the CPU with as many threads as torch uses (``OMP_NUM_THREADS`` limits both)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_onnx(path: Path, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) per image of ``loader``'s ``(x, y)`` batches, run by onnxruntime."""
    run = session(path)
    preds, labels = [], []
    for x, y in loader:
        (logits,) = run.run(None, {INPUT_NAME: x.numpy().astype(np.float32)})
        preds.append(logits.argmax(axis=1))
        labels.append(np.asarray(y))
    return np.concatenate(preds), np.concatenate(labels)


def evaluate_onnx(path: Path, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1] of the ONNX model at ``path`` on ``loader``."""
    preds, labels = predict_onnx(path, loader)
    return float((preds == labels).mean()) if len(labels) else 0.0


def host_ms(path: Path, example: torch.Tensor, repeats: int = 30) -> float:
    """Median milliseconds of one ``example`` through onnxruntime on this machine's CPU, one thread, after a
    warm-up."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    run = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: example.numpy().astype(np.float32)}
    for _ in range(3):
        run.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
