"""``ac bench RUN --device D --profile-layers``: the cost of every convolution of a run's dense and compressed
models on a device, one row per layer, saved as ``<run>/bench/<device>-layers.json`` for the search's latency
objective (a lookup by conv shape and kept rows).

Each convolution is cut out into a one-node ONNX model with its real weights (so a column-pruned conv keeps its
zero columns and runs on the compact kernel with only the kept rows), built as a static runner like a whole
model, and measured with the device's metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from rich.progress import Progress

from ac_toolchain.bench import VARIANTS, bench_json, bench_target, build_artifact
from ac_toolchain.errors import CheckpointError
from android_bench.bench import METRICS, write_json
from android_bench.device import BenchSettings, Device
from android_bench.devices import get_device
from android_bench.lock import DeviceLock
from android_bench.stats import summarize


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def conv_layers(onnx_path: Path) -> list[dict[str, Any]]:
    """Every Conv of the model: its name, input shape, weights, bias and attributes."""
    model = onnx.load(str(onnx_path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = _shapes(model)
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        bias = weights.get(node.input[2]) if len(node.input) > 2 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        layers.append({"name": node.name or node.output[0], "input_shape": shapes[node.input[0]],
                       "weight": weights[node.input[1]], "bias": bias, "attrs": attrs})  # fmt: skip
    return layers


def single_conv_model(layer: dict[str, Any], opset: int = 17) -> onnx.ModelProto:
    w, b = layer["weight"], layer["bias"]
    inits = [numpy_helper.from_array(w, "w"), *([numpy_helper.from_array(b, "b")] if b is not None else [])]
    node = helper.make_node("Conv", ["input", "w", *(["b"] if b is not None else [])], ["output"], **layer["attrs"])
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, layer["input_shape"])
    y = helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "conv", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return shape_inference.infer_shapes(model)


def describe(layer: dict[str, Any], variant: str) -> dict[str, Any]:
    """The lookup key of a row: shape, geometry, kept rows of the weight matrix and MACs."""
    w, a = layer["weight"], layer["attrs"]
    columns = w.reshape(w.shape[0], -1)
    kept = int(np.any(columns != 0, axis=0).sum())
    _, c, h, wd = layer["input_shape"]
    return {"variant": variant, "layer": layer["name"], "in_channels": c, "height": h, "width": wd,
            "out_channels": int(w.shape[0]), "kernel": list(w.shape[2:]), "stride": list(a.get("strides", [1, 1])),
            "padding": list(a.get("pads", [0, 0, 0, 0])), "groups": int(a.get("group", 1)),
            "rows_kept": kept, "rows_total": int(columns.shape[1])}  # fmt: skip


def profile_layers(run_dir: Path, device_name: str, settings: BenchSettings) -> dict[str, Any]:
    """Measure every conv of the run's dense and compressed models; returns (and writes) the table."""
    missing = [f for f in VARIANTS.values() if not (run_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"{run_dir} has no {' or '.join(missing)}; profile a finished `ac compress` run")
    device = get_device(device_name)
    target = bench_target(device)
    jobs = [(v, i, layer) for v, f in VARIANTS.items() for i, layer in enumerate(conv_layers(run_dir / f))]
    rows = []
    with DeviceLock(device.name), Progress(transient=True) as progress, _closing(device):
        task = progress.add_task(f"conv layers on {device.name}", total=len(jobs))
        for variant, i, layer in jobs:
            folder = run_dir / "bench" / "layers" / f"{target.name}-{variant}-{i:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            onnx.save(single_conv_model(layer), str(folder / "layer.onnx"))
            artifact = build_artifact(folder / "layer.onnx", target, folder / "artifact")
            measured = device.measure(artifact, settings)
            value = measured.get("instructions") or summarize(measured["samples_us"])["median"]
            rows.append({**describe(layer, variant), "value": value})
            progress.advance(task)
    table = {"device": device.name, "metric": device.metric, "unit": METRICS[device.metric].unit,
             "fingerprint": device.fingerprint(), "rows": rows}  # fmt: skip
    write_json(bench_json(run_dir, f"{device.name}-layers"), table)
    return table


@contextmanager
def _closing(device: Device) -> Iterator[Device]:
    try:
        yield device
    finally:
        device.close()
