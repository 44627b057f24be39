"""Per-layer latency of column-pruned convs: the kernels/ compact-conv kernel on the kept columns vs the same conv
with all columns, and onnxruntime on the same two layers, side by side in one process.

    python -m benchmarks.layer_latency [--model resnet18] [--rate 0.8] [--scheme column] [--runs 100]

Builds the CIFAR-layout model (3x32x32, batch 1), prunes it one-shot and compacts it; for every CompactConv2d it
records the layer's input, then times round-robin: the kernel with the kept rows, the kernel with every row
(a dense conv of the same shape), onnxruntime on the layer's CompactConv2d ONNX and on the dense conv ONNX.
Realised ratio = (dense kernel time / compact kernel time) / (rows / kept rows): 1.0 means the column pruning
turns into speed one for one. Writes benchmarks/results/layer_latency-<model>-<scheme>-<rate>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import ac_toolchain as ac
from ac_toolchain import native
from ac_toolchain.compact import CompactConv2d, compact
from ac_toolchain.export import export_onnx
from benchmarks.structure_latency import ort_runner, result_stem, save, time_round_robin


def layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def recorder(name: str):  # a forward hook that returns None, so the output stays
        return lambda _module, args, _out: seen.__setitem__(name, args[0].detach())

    hooks = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if isinstance(m, CompactConv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def runners(layer: CompactConv2d, x: torch.Tensor, threads: int, tmp: Path) -> dict[str, object]:
    geo = native.Geometry(layer.kernel_size, layer.stride, layer.padding, layer.dilation)  # type: ignore[arg-type]
    rows = layer.index.numpy()  # type: ignore[operator]
    total = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    kept = layer.weight.detach().numpy()
    full = np.random.default_rng(0).standard_normal((layer.out_channels, total), np.float32)
    w_kept, w_all = native.pack_weights(kept), native.pack_weights(full)
    all_rows, xn = np.arange(total), x.numpy()
    dense = layer.to_conv2d().eval()
    with torch.no_grad():
        dense.weight.copy_(torch.randn_like(dense.weight))
    return {
        "kernel compact": lambda: native.compact_conv2d(xn, kept, rows, None, geo, threads=threads, packed=w_kept),
        "kernel dense": lambda: native.compact_conv2d(xn, full, all_rows, None, geo, threads=threads, packed=w_all),
        "onnxruntime compact": ort_runner(export_onnx(layer.eval(), x, tmp / "compact.onnx"), x, threads),
        "onnxruntime dense": ort_runner(export_onnx(dense, x, tmp / "dense.onnx"), x, threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rate", type=float, default=0.8)
    parser.add_argument("--scheme", default="column")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    model = ac.build_model(args.model, num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    ac.prune(model, x, args.rate, args.scheme)
    small = compact(model, x).eval()
    rows = []
    for name, inp in layer_inputs(small, x).items():
        layer = small.get_submodule(name)
        assert isinstance(layer, CompactConv2d)
        with tempfile.TemporaryDirectory() as tmp:
            samples = time_round_robin(runners(layer, inp, args.threads, Path(tmp)), args.runs, warmup=10)  # type: ignore[arg-type]
        med = {k: statistics.median(v) for k, v in samples.items()}
        kept, total = int(layer.index.numel()), layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]  # type: ignore[operator]
        reduction = total / kept
        rows.append({"layer": name, "shape": list(inp.shape), "filters": layer.out_channels, "kept_rows": kept,
                     "rows": total, "median_ms": med,
                     "realised_kernel": med["kernel dense"] / med["kernel compact"] / reduction,
                     "realised_onnxruntime": med["onnxruntime dense"] / med["onnxruntime compact"] / reduction,
                     })  # fmt: skip
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    stem = result_stem("layer_latency", args)
    result = {"model": args.model, "scheme": args.scheme, "rate": args.rate, "runs": args.runs,
              "threads": args.threads, "layers": rows}  # fmt: skip
    lines = [
        f"# {args.model}, {args.scheme} at {args.rate}: column-pruned layers alone (batch 1, {args.threads} threads, "
        f"median of {args.runs} round-robin runs, ms)",
        "",
        "| layer | input | kept / rows | kernel compact | kernel dense | realised | ORT compact | ORT dense "
        "| ORT realised |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['layer']} | {'×'.join(map(str, r['shape'][1:]))}→{r['filters']} | {r['kept_rows']}/{r['rows']} | "
            f"{r['median_ms']['kernel compact']:.3f} | {r['median_ms']['kernel dense']:.3f} | "
            f"{r['realised_kernel']:.2f} | {r['median_ms']['onnxruntime compact']:.3f} | "
            f"{r['median_ms']['onnxruntime dense']:.3f} | {r['realised_onnxruntime']:.2f} |"
            for r in rows
        ],
        "",
        "realised = (dense time ÷ compact time) ÷ (rows ÷ kept rows); 1.00: column pruning turns into speed 1:1.",
        "",
    ]
    save(stem, result, lines)


if __name__ == "__main__":
    main()
