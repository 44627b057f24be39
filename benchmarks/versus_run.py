"""Torch-Pruning against one finished run, on the run's own terms: its dense.pt, its split, its params ratio,
and as many fine-tuning epochs at its ``prune.finetune_lr`` as its chain trained after the dense model; top-1
on the same test images.

    python -m benchmarks.versus_run runs/resnet18-arm64-20261203-170000 --out versus-main-job

One run has no seeds to pair over, so the comparison pairs the test images: ``d_i`` is 1 when only our model
classifies image ``i`` correctly, -1 when only the peer does; the table gives the mean difference with its
two-sided 95 % Student-t interval over the images (``scipy.stats.t``), and says "not distinguishable" when the
interval holds 0. Writes ``<out>.json``, ``.md`` and ``.png`` in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from scipy.stats import t as student_t

from ac_toolchain import config as cfgmod
from ac_toolchain.context import build, example_input, load_splits
from ac_toolchain.count import count
from ac_toolchain.runs import load_state_dict
from ac_toolchain.train import FitSettings, correct_per_image, fit, make_loader, pick_device, seed_everything
from benchmarks.peers import RESULTS, chain_epochs, write

MODES = ("uniform", "global")


def paired(ours: torch.Tensor, peer: torch.Tensor) -> dict[str, Any]:
    """Mean of ``ours - peer`` (per-image correctness, in points) with its 95 % t-interval and a verdict."""
    d = (ours.float() - peer.float()) * 100
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(unbiased=True)) if n > 1 else 0.0
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.inf
    low, high = mean - half, mean + half
    verdict = "ahead" if low > 0 else "behind" if high < 0 else "not distinguishable"
    return {"mean": round(mean, 3), "low": round(low, 3), "high": round(high, 3), "images": n, "verdict": verdict}


def _ours(run_dir: Path, cfg: cfgmod.CompressConfig, splits: Any, device: torch.device) -> torch.Tensor:
    model = build(cfg, splits.num_classes)
    load_state_dict(model, run_dir / "compressed.pt")
    return correct_per_image(model.to(device), make_loader(splits.test, 256, shuffle=False), device)


def _peer(mode: str, run_dir: Path, cfg: cfgmod.CompressConfig, ratio: float, splits: Any,
          device: torch.device) -> dict[str, Any]:  # fmt: skip
    from benchmarks.peer_torch_pruning import prune_to_params_ratio  # the optional extra

    seed_everything(cfg.run.seed)
    net = build(cfg, splits.num_classes)
    load_state_dict(net, run_dir / "dense.pt")
    start = time.perf_counter()
    pruned, tp_ratio = prune_to_params_ratio(net.eval(), example_input(cfg), ratio, mode)
    settings = FitSettings.from_config(cfg.train, epochs=chain_epochs(cfg), lr=cfg.prune.finetune_lr)
    fit(pruned, splits.train, settings, device, seed=cfg.run.seed, label=f"tp-{mode} fine-tune")
    correct = correct_per_image(pruned, make_loader(splits.test, 256, shuffle=False), device)
    counts = count(pruned.cpu().eval(), example_input(cfg))
    return {"method": f"tp-{mode}", "params_ratio": round(tp_ratio, 3), "params": counts["params"],
            "accuracy": round(float(correct.float().mean()), 6), "seconds": round(time.perf_counter() - start, 1),
            "correct": correct}  # fmt: skip


def compare(run_dir: Path, modes: tuple[str, ...]) -> dict[str, Any]:
    cfg = cfgmod.load(run_dir / "config.toml")
    report = json.loads((run_dir / "report.json").read_text())
    splits, device = load_splits(cfg), pick_device(cfg.run.device)
    ours = _ours(run_dir, cfg, splits, device)
    ratio = report["ratios"]["params"]
    rows = [{"method": "ours", "params_ratio": ratio, "params": report["compressed"]["params"],
             "accuracy": round(float(ours.float().mean()), 6), "seconds": sum(report["timings"].values())}]  # fmt: skip
    for mode in modes:
        row = _peer(mode, run_dir, cfg, ratio, splits, device)
        row["ours_minus_peer"] = paired(ours, row.pop("correct"))
        rows.append(row)
        print(f"tp-{mode}: {row['accuracy']:.2%} at {row['params_ratio']}x; ours - peer {row['ours_minus_peer']}")
    return {"run": str(run_dir), "model": report["model"], "dense_accuracy": report["dense"]["accuracy"],
            "epochs": chain_epochs(cfg), "lr": cfg.prune.finetune_lr, "rows": rows}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Torch-Pruning against one run: {doc['model']}", "",
             f"Run `{doc['run']}`; dense top-1 {doc['dense_accuracy']:.2%}. Each peer prunes the run's dense.pt "
             f"one shot to the run's params ratio, then fine-tunes {doc['epochs']} epochs at lr {doc['lr']:g}; "
             "top-1 on the run's test images. Differences are paired image by image (95 % t-interval).", "",
             "| method | params ÷ | params | top-1 | ours − method (points) | seconds |",
             "|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in doc["rows"]:
        d = r.get("ours_minus_peer")
        diff = f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] {d['verdict']}" if d else "—"
        lines.append(f"| {r['method']} | {r['params_ratio']:.1f}× | {r['params']:,} | {r['accuracy']:.2%} | {diff} | "
                     f"{r['seconds']:.0f} |")  # fmt: skip
    lines += ["", "Seconds: ours is the whole run (dense training, compile and bench included); a peer's is its "
              "pruning and fine-tuning.", ""]  # fmt: skip
    return "\n".join(lines)


def plot(doc: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = doc["rows"]
    acc = [100 * r["accuracy"] for r in rows]
    n = next((r["ours_minus_peer"]["images"] for r in rows if "ours_minus_peer" in r), 1000)
    err = [196 * math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / n) for r in rows]  # binomial 95 %, points
    ax.bar([r["method"] for r in rows], acc, yerr=err, capsize=4, color=["C0"] + ["C7"] * (len(rows) - 1))
    ax.axhline(100 * doc["dense_accuracy"], color="k", ls="--", lw=1, label="dense")
    ax.set_ylim(min(acc) - 3, 100)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{doc['model']} at {rows[0]['params_ratio']:.0f}x params")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run directory")
    ap.add_argument("--modes", default=",".join(MODES), help="Torch-Pruning modes: uniform, global")
    ap.add_argument("--out", default="versus-run")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    args = ap.parse_args()
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if not (args.run / "report.json").is_file():
        raise SystemExit(f"{args.run} has no report.json: pass a finished run directory")
    write(compare(args.run, modes), args.results_dir, args.out, markdown, plot)


if __name__ == "__main__":
    main()
