"""Our torch simulation of a QDQ int8 ONNX model: the graph run op by op with torch, every QuantizeLinear as
round-half-to-even and saturation to the zero point's integer type, every DequantizeLinear as ``(q - zp) * scale``.

It is the reference that onnxruntime's execution of the same file is checked against (docs/quantize.md): the two
differ only where onnxruntime's fused int8 kernels round an int32 accumulator once where the simulation sums
dequantized floats. No library runs QDQ ONNX in torch (onnx2torch has no QuantizeLinear / DequantizeLinear and
needs constant weights), hence this interpreter; it covers the ops the zoo's models export to and refuses others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ac_toolchain.errors import ModelError

Op = Callable[[list[Any], dict[str, Any]], torch.Tensor]
INTEGER_RANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255), torch.int32: (-(2**31), 2**31 - 1)}


def _quantize(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, scale, zero = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else torch.zeros((), dtype=torch.uint8)
    lo, hi = INTEGER_RANGE[zero.dtype]
    scale, zero = _per_axis(x, scale, attrs), _per_axis(x, zero, attrs)
    q = torch.round(x.double() / scale.double()) + zero.double()  # torch.round rounds half to even, as ONNX does
    return q.clamp(lo, hi).to(zero.dtype)


def _dequantize(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    q, scale = inputs[0], inputs[1]
    zero = inputs[2] if len(inputs) > 2 else torch.zeros((), dtype=q.dtype)
    scale, zero = _per_axis(q, scale, attrs), _per_axis(q, zero, attrs)
    return ((q.double() - zero.double()) * scale.double()).float()


def _per_axis(x: torch.Tensor, p: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
    """A per-channel scale or zero point shaped to broadcast along ``axis``; a scalar as it is."""
    if p.dim() == 0:
        return p
    axis = attrs.get("axis", 1) % x.dim()
    return p.reshape([-1 if d == axis else 1 for d in range(x.dim())])


def _pads(attrs: dict[str, Any], spatial: int) -> tuple[list[int], list[int]]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError("the int8 simulation supports explicit pads only (auto_pad NOTSET)")
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    return pads[:spatial], pads[spatial:]


def _padded(x: torch.Tensor, attrs: dict[str, Any], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """The input padded by hand where begin and end pads differ; else the symmetric pads for torch."""
    begin, end = _pads(attrs, x.dim() - 2)
    if begin == end:
        return x, begin
    flat = [p for b, e in zip(reversed(begin), reversed(end), strict=True) for p in (b, e)]
    return F.pad(x, flat, value=value), [0] * len(begin)


def _conv(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    x, pads = _padded(x, attrs)
    return F.conv2d(x, weight, bias, list(attrs.get("strides", [1, 1])), pads, list(attrs.get("dilations", [1, 1])),
                    attrs.get("group", 1))  # fmt: skip


def _gemm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a = inputs[0].t() if attrs.get("transA", 0) else inputs[0]
    b = inputs[1].t() if attrs.get("transB", 0) else inputs[1]
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y + attrs.get("beta", 1.0) * inputs[2] if len(inputs) > 2 and inputs[2] is not None else y


def _max_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, pads = _padded(inputs[0], attrs, value=float("-inf"))
    kernel = list(attrs["kernel_shape"])
    return F.max_pool2d(x, kernel, list(attrs.get("strides", kernel)), pads, list(attrs.get("dilations", [1, 1])),
                        ceil_mode=bool(attrs.get("ceil_mode", 0)))  # fmt: skip


def _average_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, pads = _padded(inputs[0], attrs)
    kernel = list(attrs["kernel_shape"])
    return F.avg_pool2d(x, kernel, list(attrs.get("strides", kernel)), pads, bool(attrs.get("ceil_mode", 0)),
                        bool(attrs.get("count_include_pad", 0)))  # fmt: skip


def _reduce_mean(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    axes = inputs[1].tolist() if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
    if axes is None:
        axes = list(range(inputs[0].dim()))
    return inputs[0].mean(dim=[int(a) for a in axes], keepdim=bool(attrs.get("keepdims", 1)))


def _reshape(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, shape = inputs[0], [int(s) for s in inputs[1].tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _clip(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    return inputs[0].clamp(None if lo is None else float(lo), None if hi is None else float(hi))


def _gather(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    data, indices = inputs[0], inputs[1].long()
    axis = attrs.get("axis", 0) % data.dim()
    picked = data.index_select(axis, torch.where(indices < 0, indices + data.shape[axis], indices).flatten())
    return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])


OPS: dict[str, Op] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda i, a: i[0] @ i[1],
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "ReduceMean": _reduce_mean,
    "Reshape": _reshape,
    "Flatten": lambda i, a: i[0].flatten(a.get("axis", 1) % i[0].dim()),
    "Relu": lambda i, a: torch.relu(i[0]),
    "Clip": _clip,
    "Add": lambda i, a: i[0] + i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Concat": lambda i, a: torch.cat(i, dim=a["axis"]),
    "Gather": _gather,
    "Identity": lambda i, a: i[0],
}


class QdqSimulation:
    """Runs the ONNX model at ``path`` with torch; ``sim(x)`` gives its first output for a float batch ``x``."""

    def __init__(self, path: Path) -> None:
        model = onnx.load(str(path))
        unknown = sorted({n.op_type for n in model.graph.node} - set(OPS))
        if unknown:
            raise ModelError(f"{path.name}: the int8 simulation has no op {', '.join(unknown)}")
        self.constants = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in model.graph.initializer}
        self.nodes = [(n.op_type, list(n.input), list(n.output), {a.name: helper.get_attribute_value(a)
                       for a in n.attribute}) for n in model.graph.node]  # fmt: skip
        self.input = model.graph.input[0].name
        self.output = model.graph.output[0].name

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = {**self.constants, self.input: x.float(), "": None}
        for op, inputs, outputs, attrs in self.nodes:
            values[outputs[0]] = OPS[op]([values[name] for name in inputs], attrs)
        return values[self.output]


def output_step(path: Path) -> float:
    """The quantization step of a QDQ model's output: the scale of the DequantizeLinear that produces it."""
    model = onnx.load(str(path))
    node = next((n for n in model.graph.node if model.graph.output[0].name in n.output), None)
    if node is None or node.op_type != "DequantizeLinear":
        raise ModelError(f"{path.name}: the output is not dequantized int8 (not a QDQ model)")
    return float({t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[node.input[1]])


def simulate_predictions(path: Path, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, label) per image of ``loader``'s ``(x, y)`` batches, by the torch simulation."""
    sim = QdqSimulation(path)
    preds, labels = [], []
    for x, y in loader:
        preds.append(sim(x).argmax(dim=1).numpy())
        labels.append(np.asarray(y))
    return np.concatenate(preds), np.concatenate(labels)
