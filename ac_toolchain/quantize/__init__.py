"""Post-training int8 quantization of the compressed model (docs/quantize.md): BN folding, a QDQ ONNX model by
onnxruntime's ``quantize_static``, our torch simulation of it, and the four-model comparison of the Quantize
stage and ``ac quantize RUN``."""

from ac_toolchain.quantize.fold import fold_bn
from ac_toolchain.quantize.ptq import (
    ACTIVATIONS,
    CALIBRATIONS,
    evaluate_onnx,
    export_fp32,
    predict_onnx,
    quantize_onnx,
)
from ac_toolchain.quantize.run import quantize_run
from ac_toolchain.quantize.simulate import QdqSimulation, simulate_predictions

__all__ = ["ACTIVATIONS", "CALIBRATIONS", "QdqSimulation", "evaluate_onnx", "export_fp32", "fold_bn",
           "predict_onnx", "quantize_onnx", "quantize_run", "simulate_predictions"]  # fmt: skip
