"""ONNX export and validation."""

from ac_toolchain.export.onnx import check_with_onnxruntime, export_onnx

__all__ = ["check_with_onnxruntime", "export_onnx"]
