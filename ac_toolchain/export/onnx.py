"""Export to ONNX with torch's exporter (torch.export based), then prove the file: onnx.checker and
onnxruntime against torch on the same input."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ac_toolchain.errors import ModelError

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = False) -> Path:
    """Write ``model`` (eval mode, batch shape of ``example``; any batch with ``dynamic_batch``) as one
    self-contained ONNX file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # else the exporter's FileNotFoundError reads as a model problem
    model = model.eval()
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    quiet = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, external_data=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False, dynamic_shapes=dynamic,
            )  # fmt: skip
    except Exception as exc:
        raise ModelError(
            f"ONNX export failed: {_root_cause(exc)}; the model uses an op that torch.export or the ONNX "
            "exporter does not support — replace it with standard layers"
        ) from None
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's first line, without terminal colour codes."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {text[0][:300]}"


def check_with_onnxruntime(path: str | Path, model: nn.Module, example: torch.Tensor) -> float:
    """Run the ONNX file in onnxruntime (CPU) and return max |ORT - torch| on ``example``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
    with torch.no_grad():
        want = model.eval()(example).numpy()
    return float(np.abs(got - want).max())
