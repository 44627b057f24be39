"""Instructions per inference under valgrind's callgrind (deterministic), beside structure_latency.py's times.

    python -m benchmarks.instruction_counts [--model resnet18] [--rate 0.8] [--scheme filter+column]

The same models as structure_latency.py (seed 0, one-shot pruned, compacted). TVM: the dense and the compact
model built for the portable x86-avx2 target as static runners (valgrind cannot run AVX-512 code, so not
-march=native), counted by the `callgrind` bench device: runs of 1 and 2 inferences, the difference is one
(start-up and loading cancel; repeats to ~0.0001 %). onnxruntime: the dense, masked and compact ONNX in a python
process of this file (``--ort-child``), runs of 1 and 1 + 8 inferences: its process counts vary by ~0.6 %
between identical runs, so 8 inferences share that noise. onnxruntime picks its AVX2 kernels under valgrind,
so both engines run the same ISA. One thread throughout: counts of a multithreaded run depend on how long idle
workers spin. Slow: ~1-2 minutes per onnxruntime run of ResNet-18 under callgrind.
Writes benchmarks/results/instruction_counts-<model>-<scheme>-<rate>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ac_toolchain.scheme_registry import DEFAULT_SCHEME


def ort_child(onnx_path: str, runs: int) -> None:
    """Run `runs` inferences of onnx_path with onnxruntime on one thread (what callgrind counts)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    for _ in range(runs):
        session.run(None, {"input": x})


def count_ort(onnx_path: Path, script: Path, extra_runs: int = 8) -> int:
    """(count(1 + R) - count(1)) / R for onnxruntime in a python process. ``script`` is a private copy of this
    file: every run must execute the same bytes. Unlike the runner's, these process counts are not exact: two
    identical runs differed by 0.6 % (966.0 M vs 960.3 M instructions, mostly start-up), so R = 8 inferences
    share that noise."""
    from android_bench.callgrind import count_command

    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same hashing in every run
    one, more = (
        count_command([sys.executable, str(script), "--ort-child", str(onnx_path), str(n)], env)
        for n in (1, 1 + extra_runs)
    )
    return round((more - one) / extra_runs)


def count_tvm(onnx_path: Path, out_dir: Path) -> int:
    from ac_toolchain.compile import get_target
    from ac_toolchain.compile.tvm_build import compile_onnx
    from android_bench.callgrind import CallgrindDevice
    from android_bench.device import BenchSettings

    compile_onnx(onnx_path, dataclasses.replace(get_target("x86-avx2"), link="static"), out_dir)
    return int(CallgrindDevice().measure(out_dir, BenchSettings())["instructions"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rate", type=float, default=0.8)
    parser.add_argument("--scheme", default=DEFAULT_SCHEME)
    args = parser.parse_args()
    from benchmarks.structure_latency import export_variants

    with tempfile.TemporaryDirectory() as tmp:
        v = export_variants(args.model, args.rate, args.scheme, Path(tmp))
        onnx_paths, script = v["onnx"], Path(shutil.copy(__file__, Path(tmp) / "ort_child.py"))
        counts = {
            "tvm dense": count_tvm(onnx_paths["dense"], Path(tmp) / "tvm-dense"),
            "tvm compact": count_tvm(onnx_paths["compact_tvm"], Path(tmp) / "tvm-compact"),
            **{f"onnxruntime {name}": count_ort(onnx_paths[name], script) for name in ("dense", "masked", "compact")},
        }
    write(args, counts, *v["counts"])


def write(args: argparse.Namespace, counts: dict[str, int], dense: dict, pruned: dict) -> None:
    import onnxruntime as ort
    import tvm

    from benchmarks.structure_latency import result_stem, save

    flops_reduction = dense["flops"] / pruned["flops"]
    realised = {
        "tvm": counts["tvm dense"] / counts["tvm compact"] / flops_reduction,
        "onnxruntime (compact ONNX)": counts["onnxruntime dense"] / counts["onnxruntime compact"] / flops_reduction,
        "onnxruntime (masked ONNX)": counts["onnxruntime dense"] / counts["onnxruntime masked"] / flops_reduction,
    }
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "model": args.model, "input": [1, 3, 32, 32], "scheme": args.scheme, "rate": args.rate, "threads": 1,
        "dense": dense, "pruned": pruned, "flops_reduction": flops_reduction,
        "instructions_per_inference": counts, "realised_speedup_over_flops_reduction": realised,
        "machine": {"valgrind": valgrind, "onnxruntime": ort.__version__, "tvm": tvm.__version__,
                    "tvm_target": "x86-avx2 (static runner)", "cpu": platform.processor() or platform.machine()},
    }  # fmt: skip
    stem = result_stem("instruction_counts", args)
    base = counts["onnxruntime dense"]
    lines = [
        f"# {args.model}, {args.scheme} at {args.rate}: instructions per inference (callgrind, 1 thread, AVX2)",
        "",
        f"FLOPs (MACs) {dense['flops']:,} → {pruned['flops']:,} ({flops_reduction:.2f}×).",
        "",
        "| variant | instructions | vs onnxruntime dense |",
        "|---|---:|---:|",
        *[f"| {k} | {v:,} | {base / v:.2f}× |" for k, v in counts.items()],
        "",
        "Realised reduction (dense ÷ pruned, same engine) ÷ FLOPs reduction: "
        + ", ".join(f"{k} {r:.2f}" for k, r in realised.items())
        + ".",
        "",
    ]
    save(stem, result, lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ort-child"]:
        ort_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
