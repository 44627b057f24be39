"""int8 against fp32, dense against compact, side by side: top-1, file bytes, host latency, and where the run was
benched on qemu-arm64 its instruction counts.

    python -m benchmarks.int8 --run RUN [--run RUN ...] [--model lenet5 [--preset cpu]] [--calibration percentile]

Per finished run (``--run``, or ``--model``: ``ac compress MODEL --preset P --target x86 --bench none`` run here
first, or reused from ``--workdir``), the Quantize stage's comparison (ac_toolchain/quantize/run.py): the dense
and the compact model as fp32 ONNX and as int8 QDQ ONNX by onnxruntime's ``quantize_static`` (per-channel int8
weights, per-tensor int8 activations, BN folded), each run by onnxruntime on the run's test split and timed on one
thread. The compact int8 model against the compact fp32 one is a paired per-image difference with its 95 %
t-interval (benchmarks/versus_run.py). With ``--qemu`` each run is also benched on qemu-arm64 (``ac bench``): the
dense and compact fp32 models and the compact int8 one, whose convs run on our int8 kernel, in instructions per
inference. Writes benchmarks/results/<out>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import ac_toolchain as ac
from ac_toolchain import config as cfgmod
from ac_toolchain.bench_run import INT8, QUICK, bench_run
from ac_toolchain.context import load_splits
from ac_toolchain.quantize import predict_onnx, quantize_run
from ac_toolchain.quantize.run import QAT
from ac_toolchain.train import make_loader
from benchmarks import peers
from benchmarks.versus_run import paired

RESULTS = Path(__file__).parent / "results"
QAT_INT8 = f"{QAT} int8"


def finished_run(model: str, preset: str, workdir: Path) -> Path:
    """A finished ``ac compress`` run of ``model`` under ``workdir``: the newest there, or a new one."""
    runs = workdir / f"{model}-{preset}"
    if not _finished(runs):
        ac.compress(model, preset, {"run.target": "x86", "run.bench": "none", "run.runs_dir": str(runs)})
    done = _finished(runs)
    if not done:
        raise RuntimeError(f"ac compress {model} --preset {preset} ended without a compressed model in {runs}")
    return done[-1]


def _finished(runs: Path) -> list[Path]:
    return sorted(p.parent.parent for p in runs.glob("*/records/evaluate-compressed.json"))


def _instructions(run: Path) -> dict[str, int]:
    """The qemu-arm64 instruction counts of the run's dense, compressed and int8 builds, if it was benched there."""
    path = run / "bench" / "qemu-arm64.json"
    if not path.is_file():
        return {}
    variants = json.loads(path.read_text())["variants"]
    names = {"dense": "dense fp32", "compressed": "compact fp32", INT8: "compact int8"}
    return {names[v]: variants[v]["instructions"] for v in names if v in variants}


def measure(run: Path, settings: cfgmod.QuantizeConfig, qemu: bool) -> dict[str, Any]:
    """One run's four models (with ``qemu``: dense fp32, compact fp32 and compact int8 built and counted on
    qemu-arm64), and compact int8 against compact fp32 image by image."""
    record = quantize_run(run, settings)
    if qemu:
        bench_run(run, "qemu-arm64", QUICK)
    cfg = cfgmod.load(run / "config.toml")
    test = make_loader(load_splits(cfg).test, 256, shuffle=False)
    right = {}
    for name in ("compact fp32", "compact int8", QAT_INT8):
        if name in record.variants:
            preds, labels = predict_onnx(Path(record.variants[name].path), test)
            right[name] = torch.from_numpy(preds == labels)
    report = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    return {"model": cfg.model.arch, "run": str(run), "ratios": report.get("ratios"),
            "variants": {k: asdict(v) for k, v in record.variants.items()}, "size_ratio": record.size_ratio,
            "simulated_top1": record.simulated_top1, "test_images": record.test_images,
            "int8_minus_fp32": paired(right["compact int8"], right["compact fp32"]),
            "qat_minus_ptq": paired(right[QAT_INT8], right["compact int8"]) if QAT_INT8 in right else None,
            "qemu_instructions": _instructions(run)}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# int8 vs fp32, dense vs compact ({doc['calibration']} calibration, {doc['calib_batches']} batches)",
             "", f"`{doc['command']}` on {doc['machine']}, torch {doc['torch']}. Top-1 on each run's test split by "
             "onnxruntime; host ms: median of one image through onnxruntime on one thread; qemu: instructions per "
             "inference of the TVM build for android-arm64 (int8: its convs on our int8 kernel, with dot product).",
             "",
             "| model (params ×) | variant | top-1 | bytes | host ms | qemu-arm64 instructions |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in doc["rows"]:
        x = (row["ratios"] or {}).get("params")
        for name, v in row["variants"].items():
            qemu = row["qemu_instructions"].get(name)
            lines.append(f"| {row['model']} ({x}×) | {name} | {v['top1']:.2%} | {v['bytes']:,} | {v['host_ms']:.3f} "
                         f"| {f'{qemu:,}' if qemu else '—'} |")  # fmt: skip
    lines += ["", "| model | compact int8 − fp32 (points, 95 % interval, paired per image) | verdict | "
              "fp32 ÷ int8 bytes | torch simulation of int8 |", "|---|---|---|---:|---:|"]  # fmt: skip
    for row in doc["rows"]:
        d, sim = row["int8_minus_fp32"], row["simulated_top1"]
        shown = "—" if sim is None else f"{sim:.2%}"
        lines.append(f"| {row['model']} | {_interval(d)} | {d['verdict']} | {row['size_ratio']}× | {shown} |")
    qat = [row for row in doc["rows"] if row.get("qat_minus_ptq")]
    lines += ["", "| model | compact QAT int8 − PTQ int8 (points, paired per image) | verdict |", "|---|---|---|",
              *[f"| {r['model']} | {_interval(r['qat_minus_ptq'])} | {r['qat_minus_ptq']['verdict']} |" for r in qat],
              ] if qat else []  # fmt: skip
    return "\n".join([*lines, ""])


def _interval(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] over {d['images']} images"


def plot(doc: dict[str, Any], out: Path) -> None:
    """Per model: file size (log) against top-1 of the four models."""
    rows = doc["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 4.2), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for name, v in row["variants"].items():
            colour = "#47a" if name.startswith("compact") else "#a33"
            ax.scatter(v["bytes"], 100 * v["top1"], s=70, edgecolors=colour,
                       facecolors=colour if name.endswith("int8") else "none")  # fmt: skip
            ax.annotate(name, (v["bytes"], 100 * v["top1"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ONNX file bytes (log)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(row["model"])
    fig.suptitle("fp32 (hollow) and int8 (filled): dense (red) and compact (blue)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", default=[], help="a finished run directory")
    parser.add_argument("--model", action="append", default=[], help="compress this zoo model first (or reuse)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("runs-int8"))
    parser.add_argument("--calibration", default="percentile", choices=cfgmod.CALIBRATIONS)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=0, help="add the compact model after QAT (a fifth model)")
    parser.add_argument("--qat-lr", type=float, default=cfgmod.QuantizeConfig.qat_lr)
    parser.add_argument("--qemu", action="store_true", help="also build and count each run on qemu-arm64")
    parser.add_argument("--out", default="int8")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not args.run and not args.model:
        parser.error("give at least one --run RUN or --model NAME")
    settings = cfgmod.QuantizeConfig("int8", args.calib_batches, args.calibration, args.qat_epochs, args.qat_lr)
    runs = [*args.run, *(finished_run(m, args.preset, args.workdir) for m in args.model)]
    doc: dict[str, Any] = {
        "calibration": args.calibration, "calib_batches": args.calib_batches, "qat_epochs": args.qat_epochs,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "command": " ".join(["python -m benchmarks.int8", *argv]), "rows": [],
    }  # fmt: skip
    for run in runs:
        doc["rows"].append(measure(run, settings, args.qemu))
        print(json.dumps({k: doc["rows"][-1][k] for k in ("model", "size_ratio", "int8_minus_fp32")}), flush=True)
        peers.write(doc, args.results_dir, args.out, markdown, plot)


if __name__ == "__main__":
    main()
