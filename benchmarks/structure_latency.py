"""Latency of dense vs masked vs compact in torch, onnxruntime and TVM (x86 build), side by side in one process.

    python -m benchmarks.structure_latency [--model resnet18] [--rate 0.8] [--scheme filter+column] [--runs 50]

Builds the CIFAR-layout model (3x32x32, 10 classes, batch 1), prunes it one-shot, compacts it, exports the dense,
masked and compact models to ONNX, compiles the dense and compact ONNX with TVM for this machine (convolutions on
the kernels/ compact-conv kernel; the compact one in the zero-columns form the compile stage uses), then times every
variant round-robin in blocks of 5 calls (so machine noise hits all alike) and reports min / median / max in
milliseconds. Writes
benchmarks/results/structure_latency-<model>-<scheme>-<rate>.{json,md}.
"""

from __future__ import annotations

import os

# Every engine's idle workers must sleep, not spin, or they steal the cores of the engine timed next (set before
# torch / TVM start their pools; onnxruntime's is set per session below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
# TVM pins its workers to cores, onnxruntime and torch do not: with the engines taking turns in one process, a
# pinned worker measured slower (ResNet-18 filter 0.5, 2 threads: TVM compact 5.29-5.42 ms pinned, 4.79 not,
# onnxruntime 4.32-4.45 either way). Every engine's threads float here.
os.environ.setdefault("TVM_BIND_THREADS", "0")

import argparse
import importlib.metadata
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch

import ac_toolchain as ac
from ac_toolchain.compact import compact, expand_columns
from ac_toolchain.count import count
from ac_toolchain.export import export_onnx
from ac_toolchain.scheme_registry import DEFAULT_SCHEME

RESULTS = Path(__file__).parent / "results"


def result_stem(kind: str, args: argparse.Namespace) -> str:
    """<kind>-<model>-<scheme>-<rate>, plus -<N>threads where a run used more than one thread."""
    threads = getattr(args, "threads", 1)
    stem = f"{kind}-{args.model}-{args.scheme.replace('+', '_')}-{args.rate}"
    return stem if threads == 1 else f"{stem}-{threads}threads"


def save(stem: str, result: dict[str, Any], lines: list[str]) -> None:
    """benchmarks/results/<stem>.json (the result) and .md (the lines, also printed)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def ort_runner(path: Path, x: torch.Tensor, threads: int) -> Callable[[], object]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle ORT threads would steal torch's cores
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    return lambda: session.run(None, feed)


def torch_runner(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def time_round_robin(
    runners: dict[str, Callable[[], object]], runs: int, warmup: int, block: int = 5
) -> dict[str, list[float]]:
    """``runs`` samples per runner, taken in blocks of ``block`` calls, the runners' blocks in turn (so noise
    hits all alike); the first call of each block is not kept (it pays for waking the engine's threads)."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    while len(next(iter(samples.values()))) < runs:
        for name, fn in runners.items():
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: values[:runs] for name, values in samples.items()}


def tvm_runner(path: Path, x: torch.Tensor, out_dir: Path) -> Callable[[], object]:
    from ac_toolchain.compile import get_target
    from ac_toolchain.compile.tvm_build import compile_onnx, load_host_module

    compile_onnx(path, get_target("x86"), out_dir)
    run, feed = load_host_module(out_dir), x.numpy()
    return lambda: run(feed)


def export_variants(model: str, rate: float, scheme: str, tmp: Path) -> dict[str, Any]:
    """The benchmark's models (seed 0, one-shot pruned, compacted), exported to ONNX in ``tmp``: dense, masked,
    compact (CompactConv2d form, for onnxruntime) and compact_tvm (zero columns, the form the compile stage uses);
    plus the torch modules, the input and the dense / pruned counts."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    dense = ac.build_model(model, num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    masked = ac.build_model(model, num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    masked.load_state_dict(dense.state_dict())
    ac.prune(masked, x, rate, scheme)
    small = compact(masked, x).eval()
    return {
        "x": x, "torch": {"dense": dense, "masked": masked, "compact": small},
        "onnx": {"dense": export_onnx(dense, x, tmp / "dense.onnx"),
                 "masked": export_onnx(masked, x, tmp / "masked.onnx"),
                 "compact": export_onnx(small, x, tmp / "compact.onnx"),
                 "compact_tvm": export_onnx(expand_columns(small), x, tmp / "compact.tvm.onnx")},
        "counts": (count(dense, x), count(masked, x)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rate", type=float, default=0.8)
    parser.add_argument("--scheme", default=DEFAULT_SCHEME)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        v = export_variants(args.model, args.rate, args.scheme, Path(tmp))
        x, models, onnx_paths = v["x"], v["torch"], v["onnx"]
        runners = {
            **{f"torch {name}": torch_runner(m, x) for name, m in models.items()},
            **{f"onnxruntime {name}": ort_runner(onnx_paths[name], x, args.threads) for name in models},
            "tvm dense": tvm_runner(onnx_paths["dense"], x, Path(tmp) / "tvm-dense"),
            "tvm compact": tvm_runner(onnx_paths["compact_tvm"], x, Path(tmp) / "tvm-compact"),
        }
        samples = time_round_robin(runners, args.runs, warmup=5)
    write(args, samples, *v["counts"])


def write(args: argparse.Namespace, samples: dict[str, list[float]], dense: dict, pruned: dict) -> None:
    stats = {k: {"min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in samples.items()}
    base = stats["onnxruntime dense"]["median"]
    speedup = {k: base / v["median"] for k, v in stats.items()}
    flops_reduction = dense["flops"] / pruned["flops"]
    realised = {  # speed-up of the compact model over the dense one in the same engine, / FLOPs reduction
        engine: stats[f"{engine} dense"]["median"] / stats[f"{engine} compact"]["median"] / flops_reduction
        for engine in ("torch", "onnxruntime", "tvm")
    }
    result = {
        "model": args.model, "input": [1, 3, 32, 32], "scheme": args.scheme, "rate": args.rate, "runs": args.runs,
        "threads": args.threads, "dense": dense, "pruned": pruned,
        "flops_reduction": flops_reduction, "params_reduction": dense["params"] / pruned["params"],
        "realised_speedup_over_flops_reduction": realised,
        "latency_ms": stats, "speedup_vs_onnxruntime_dense": speedup,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
                    "tvm": importlib.metadata.version("apache-tvm"),
                    "cpu": platform.processor() or platform.machine()},
        "samples_ms": samples,
    }  # fmt: skip
    stem = result_stem("structure_latency", args)
    lines = [
        f"# {args.model}, {args.scheme} at {args.rate}: masked vs compact (batch 1, {args.threads} threads, "
        f"{args.runs} round-robin runs)",
        "",
        f"Params {dense['params']:,} → {pruned['params']:,} ({result['params_reduction']:.2f}×); "
        f"FLOPs (MACs) {dense['flops']:,} → {pruned['flops']:,} ({result['flops_reduction']:.2f}×).",
        "",
        "| variant | min ms | median ms | max ms | speed-up vs onnxruntime dense |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {k} | {v['min']:.2f} | {v['median']:.2f} | {v['max']:.2f} | {speedup[k]:.2f}× |"
            for k, v in stats.items()
        ],
        "",
        "Realised speed-up (dense ÷ compact, same engine) ÷ FLOPs reduction: "
        + ", ".join(f"{engine} {ratio:.2f}" for engine, ratio in realised.items())
        + ".",
        "",
    ]
    save(stem, result, lines)


if __name__ == "__main__":
    main()
