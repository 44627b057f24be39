"""Peers: our search against one uniform rate, an NNI-style search and Torch-Pruning, at the same params ratios.

    python -m benchmarks.peers --plan lenet5:30,60 --plan resnet18:50,100

``--plan MODEL:RATIOS[:MAX_DENSE_EPOCHS]``: the params ratios (dense / compressed) to reach. Torch-Pruning is an
optional extra: ``pip install -e '.[peers]'`` (torch-pruning 1.6.x; only the ``tp-*`` methods need it).

For each model (its recipe's ``--preset``, default ``cpu``; the bundled MNIST sample) ONE dense model is trained
until its validation accuracy stops rising (cached in ``--workdir``). Every method starts from it (our runs get
it as ``model.checkpoint``) and sees the same splits (same data settings and seed). Per params ratio R:

* ``uniform``: our chain with one rate in every layer, the one that meets R (``search.method=uniform``,
  ``search.params_x=R``), with the same ADMM, retraining, purification and rounds as ``ours``;
* ``ours``: our chain: simulated annealing over per-layer rates and schemes (``search.method=anneal``,
  ``search.params_x=R``), the preset's settings otherwise;
* ``nni-style``: our ablation of NNI's AutoCompress search (AutoCompressPruner's defaults), the same chain with
  ``search.energy=fraction`` (NNI's energy difference: accuracy in 0-1, not points),
  ``search.scheme_moves=false`` and ``prune.scheme=filter`` (NNI's base pruner is an L1 filter pruner),
  a constant ADMM penalty ``admm.rho_init = admm.rho_max = 1e-4`` (NNI's ``row``) and NNI's annealing schedule
  ``search.t0=100``, ``search.t_stop=20``, ``search.cooling=0.9`` (16 proposals, no cap); the ADMM / retraining
  epochs stay the preset's, so the training budget is ours;
* ``tp-uniform`` / ``tp-global``: Torch-Pruning's group-L2 magnitude pruner, one shot on the dense model, to R
  (``benchmarks.peer_torch_pruning.prune_to_params_ratio``, mode "uniform" / "global"), then fine-tuned with
  ``ac_toolchain.train.fit`` for as many epochs as our whole chain trains,
  ``search.rounds * (admm.iterations * admm.epochs_per_iteration + prune.finetune_epochs)`` of the resolved
  config, at ``prune.finetune_lr`` with cosine decay; top-1 on the test split.

Params and FLOPs (MACs) of every result are counted by ``ac_toolchain.count`` (the non-zero structure), so the
ratios are comparable; ours are the report's ``ratios`` (after purification), so they can exceed R.

Speed-ups: models in ``--qemu-models`` (default resnet18) are benched in qemu-arm64 guest instructions, dense vs
compressed. Our runs get ``run.target=arm64``, ``run.bench=qemu-arm64`` (the report's bench entry); the others run
with ``run.bench=none``. A Torch-Pruning model is benched as ``ac bench`` benches a run: its run directory gets
``dense.onnx`` (the dense model) and ``model.tvm.onnx`` (the pruned model; it has no column pruning to expand),
both are compiled into static android-arm64 runners (``ac_toolchain.bench_run.run_artifacts``) and counted
(``android_bench.bench.bench``); the output check, which ``ac bench`` does by rebuilding the zoo model from
config.toml, compares the runner under qemu with the pruned torch model instead.

Every run writes a folder in ``<workdir>/runs``. Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` to
``--results-dir`` (default benchmarks/results/, or ``--workdir`` when ``--out`` ends with ``-smoke``), after every
finished run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain.bench_run import OUTPUT_TOLERANCE, QUICK, bench_json, run_artifacts
from ac_toolchain.compile.tvm_build import TVM_ONNX
from ac_toolchain.compress import compress
from ac_toolchain.config import CompressConfig
from ac_toolchain.context import build, example_input, load_splits, open_run
from ac_toolchain.count import count
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from ac_toolchain.pipeline import new_state
from ac_toolchain.plateau import Plateau
from ac_toolchain.platform import runner_target
from ac_toolchain.runs import atomic_save, atomic_write_text, load_state_dict, new_run_dir
from ac_toolchain.train import FitSettings, evaluate, fit, make_loader, pick_device, seed_everything
from android_bench.bench import bench, write_json
from android_bench.devices import get_device
from android_bench.local import infer
from android_bench.qemu import QEMU

RESULTS = Path(__file__).parent / "results"
METHODS = ("uniform", "ours", "nni-style", "tp-uniform", "tp-global")
BAND = 0.5  # accuracy points below dense that still count as "no loss"
QEMU_DEVICE = "qemu-arm64"
# nni-style: NNI AutoCompressPruner's search settings on our chain (see the module docstring)
NNI: dict[str, Any] = {"search.energy": "fraction", "search.scheme_moves": False, "prune.scheme": "filter",
       "admm.rho_init": 1e-4, "admm.rho_max": 1e-4, "search.t0": 100.0, "search.t_stop": 20.0,
       "search.cooling": 0.9, "search.proposals": 0}  # fmt: skip  (NNI's schedule: 16 proposals)
OURS: dict[str, dict[str, Any]] = {"uniform": {"search.method": "uniform"}, "ours": {"search.method": "anneal"},
        "nni-style": {"search.method": "anneal", **NNI}}  # fmt: skip


def _log(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------- configs


def _config(model: str, preset: str, workdir: Path, overrides: dict[str, Any]) -> CompressConfig:
    base = {"run.target": "x86", "run.bench": "none", "run.runs_dir": str(workdir / "runs"), **overrides}
    return cfgmod.resolve(model, preset, base)[0]


def chain_epochs(cfg: CompressConfig) -> int:
    """Epochs our whole chain trains after the dense model: per round the ADMM epochs and the retraining."""
    admm = cfg.admm.iterations * cfg.admm.epochs_per_iteration if cfg.prune.method == "admm" else 0
    return cfg.search.rounds * (admm + cfg.prune.finetune_epochs)


def _bench_overrides(qemu: bool) -> dict[str, Any]:
    return {"run.target": "arm64", "run.bench": QEMU_DEVICE} if qemu else {"run.target": "x86", "run.bench": "none"}


# ----------------------------------------------------------------------------------------------- dense


def _test(model: nn.Module, cfg: CompressConfig, splits: Any, device: torch.device) -> dict[str, Any]:
    acc = evaluate(model, make_loader(splits.test, 256, shuffle=False), device, label="")
    counts = count(model.cpu(), example_input(cfg))
    model.to(device)
    return {"accuracy": round(acc, 6), **counts}


def train_dense(model: str, preset: str, workdir: Path, sets: dict[str, Any], max_epochs: int,
                patience: int) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Train until validation accuracy has not risen by more than its noise for ``patience`` epochs (0: train all
    ``max_epochs``; ``ac_toolchain.plateau.Plateau``); keep the last epoch. Cached per model and preset; retrained
    when ``--set`` or the epoch limits differ from the cached model's."""
    path, info = workdir / f"dense-{model}-{preset}.pt", workdir / f"dense-{model}-{preset}.json"
    key = {"sets": sets, "max_epochs": max_epochs, "patience": patience}
    if path.is_file() and info.is_file() and json.loads(info.read_text()).get("key") == key:
        return path, json.loads(info.read_text())
    run = open_run(_config(model, preset, workdir, sets))
    state = new_state(run)
    t = run.cfg.train

    def score(m: nn.Module) -> float:
        val = evaluate(m, make_loader(run.splits.val, 256, shuffle=False), run.device, label="")
        _log(f"  dense {model} epoch {plateau.epoch}: validation {val:.2%}")
        return val

    plateau = Plateau(score, patience, len(run.splits.val))  # as the Dense stage's
    start = time.perf_counter()
    settings = FitSettings.from_config(t, epochs=max_epochs, lr=t.lr)
    fit(state.model, run.splits.train, settings, run.device, seed=run.cfg.run.seed, controllers=[plateau],
        label="dense")  # fmt: skip
    atomic_save(state.model.state_dict(), path)
    result = {"key": key, "epochs_trained": plateau.epoch, "best_epoch": plateau.best_epoch,
              "val_history": [round(v, 6) for v in plateau.history], "seconds": round(time.perf_counter() - start, 1),
              **_test(state.model, run.cfg, run.splits, run.device)}  # fmt: skip
    atomic_write_text(json.dumps(result, indent=2) + "\n", info)
    return path, result


# ----------------------------------------------------------------------------------------------- methods


def run_ours(method: str, model: str, preset: str, ratio: float, dense: Path, workdir: Path, sets: dict[str, Any],
             qemu: bool) -> dict[str, Any]:  # fmt: skip
    """One of our chains (``ac_toolchain.compress``) from the shared dense model."""
    overrides = {**sets, **OURS[method], "search.params_x": ratio, "model.checkpoint": str(dense),
                 **_bench_overrides(qemu)}  # fmt: skip
    cfg = _config(model, preset, workdir, overrides)
    run_dir = new_run_dir(cfg.run.runs_dir, cfg.model.arch, f"{method}-{cfg.run.target}")
    cfgmod.save(cfg, run_dir / "config.toml")  # compress() saves it only in a folder it makes itself
    report = asdict(compress(cfg, run_dir=run_dir))
    timings = report.get("timings", {})
    entry = report.get("bench", {}).get(QEMU_DEVICE) if qemu else None
    return {"params": report["compressed"]["params"], "flops": report["compressed"]["flops"],
            "accuracy": report["compressed"]["accuracy"], "epochs": chain_epochs(cfg),
            "bench_seconds": round(sum(v for k, v in timings.items() if k.startswith(("export", "compile", "bench"))),
                                   1),
            "qemu_speedup": entry["speedup"] if entry else None, "qemu": entry,
            "run_dir": str(run_dir),
            "overrides": {k: v for k, v in overrides.items() if k != "model.checkpoint"}}  # fmt: skip


def run_tp(mode: str, model: str, preset: str, ratio: float, dense: Path, workdir: Path, sets: dict[str, Any],
           qemu: bool) -> dict[str, Any]:  # fmt: skip
    """Torch-Pruning to ``ratio``, then as many fine-tuning epochs as our chain trains; top-1 on the test split."""
    from benchmarks.peer_torch_pruning import prune_to_params_ratio  # the optional extra

    # the config of `ours` at this ratio: the same splits, and the epochs and lr the fine-tuning mirrors
    cfg = _config(model, preset, workdir, {**sets, "search.params_x": ratio, "model.checkpoint": str(dense)})
    run_dir = new_run_dir(cfg.run.runs_dir, cfg.model.arch, f"tp-{mode}")
    cfgmod.save(cfg, run_dir / "config.toml")
    seed_everything(cfg.run.seed)
    splits, device, example = load_splits(cfg), pick_device(cfg.run.device), example_input(cfg)
    net = build(cfg, splits.num_classes)
    load_state_dict(net, dense)
    net.eval()
    _log(f"  run directory: {run_dir}")
    pruned, tp_ratio = prune_to_params_ratio(net, example, ratio, mode)
    epochs, p, t = chain_epochs(cfg), cfg.prune, cfg.train
    settings = FitSettings.from_config(t, epochs=epochs, lr=p.finetune_lr)
    fit(pruned, splits.train, settings, device, seed=cfg.run.seed, label=f"tp-{mode} fine-tune")
    result = {**_test(pruned, cfg, splits, device), "epochs": epochs, "lr": p.finetune_lr,
              "tp_params_ratio": round(tp_ratio, 4), "run_dir": str(run_dir)}  # fmt: skip
    pruned.cpu().eval()
    torch.save(pruned, run_dir / "pruned-model.pt")  # the whole module: its shapes are no longer the zoo model's
    if qemu:
        start = time.perf_counter()
        entry = bench_pruned(run_dir, net.cpu().eval(), pruned, example)
        result.update(qemu_speedup=entry["speedup"], qemu=entry, bench_seconds=round(time.perf_counter() - start, 1))
    else:
        result.update(qemu_speedup=None, qemu=None, bench_seconds=0.0)
    atomic_write_text(json.dumps(result, indent=2) + "\n", run_dir / "result.json")
    return result


def bench_pruned(run_dir: Path, dense: nn.Module, pruned: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Dense vs pruned on qemu-arm64 as ``ac bench`` does, with the output check made against ``pruned``."""
    export_onnx(dense, example, run_dir / "dense.onnx")
    path = export_onnx(pruned, example, run_dir / TVM_ONNX)
    onnx_diff = check_with_onnxruntime(path, pruned, example)
    device = get_device(QEMU_DEVICE)
    try:
        artifacts = run_artifacts(run_dir, runner_target(device))  # static android-arm64 runners of both files
        out = bench_json(run_dir, device.name)
        result = bench(device, artifacts, QUICK, out)
        got = infer(artifacts["compressed"], [example.numpy()], [QEMU])[0]
        with torch.no_grad():
            diff = float(np.abs(got - pruned(example).numpy()).max())
        result["output_check"] = {"status": "ok" if diff <= OUTPUT_TOLERANCE else "mismatch", "max_abs_diff": diff,
                                  "against": "torch, the pruned model, the run's example input"}  # fmt: skip
        write_json(out, result)
    finally:
        device.close()
    if diff > OUTPUT_TOLERANCE:
        raise RuntimeError(f"{artifacts['compressed']}: outputs under qemu differ from torch by {diff:.2e}")
    return {"metric": result["metric"], "speedup": result["speedup"], "onnx_max_abs_diff": onnx_diff,
            "output_check": result["output_check"], "json": str(out)}  # fmt: skip


def _runner(method: str) -> Callable[..., dict[str, Any]]:
    """``(model, preset, ratio, dense, workdir, sets, qemu) -> result`` of a method."""
    if method in OURS:
        return lambda *a: run_ours(method, *a)
    return lambda *a: run_tp(method.removeprefix("tp-"), *a)


def run_method(method: str, model: str, preset: str, ratio: float, dense_path: Path, dense: dict[str, Any],
               args: argparse.Namespace, sets: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    qemu = model in args.qemu_models
    start = time.perf_counter()
    row: dict[str, Any] = {"method": method, "model": model, "asked_params_ratio": ratio,
                           "dense_accuracy": dense["accuracy"]}  # fmt: skip
    try:
        got = _runner(method)(model, preset, ratio, dense_path, args.workdir, sets, qemu)
    except ValueError as exc:  # Torch-Pruning cannot reach the ratio (our errors are ACError, not ValueError)
        if not method.startswith("tp-"):
            raise
        row.update(status=f"failed: {exc}", seconds=round(time.perf_counter() - start, 1))
        return row
    row.update(status="ok", params_ratio=round(dense["params"] / got["params"], 4),
               flops_ratio=round(dense["flops"] / got["flops"], 4), **got,
               seconds=round(time.perf_counter() - start, 1))  # fmt: skip
    row["accuracy_drop_points"] = round(100 * (dense["accuracy"] - row["accuracy"]), 3)
    if not qemu:
        row["qemu_speedup"] = "not measured"
    return row


# ----------------------------------------------------------------------------------------------- outputs


def _fmt_x(v: Any) -> str:
    return f"{v:.1f}×" if isinstance(v, int | float) else "—"


def best_within(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The result with the largest ``key`` ratio among those within BAND points of dense."""
    ok = [r for r in rows if r.get("status") == "ok" and r["accuracy"] >= r["dense_accuracy"] - BAND / 100 - 1e-9]
    return max(ok, key=lambda r: r[key], default=None)


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# Peers: our search vs uniform, NNI-style search and Torch-Pruning (same dense model, same epochs)", "",
             f"`{doc['command']}` on {doc['machine']}, {doc['date']} (preset `{doc['preset']}`).", "",
             "nni-style: " + ", ".join(f"`{k}={v}`" for k, v in doc["nni_style"].items()) + ". Torch-Pruning: "
             "one-shot group-L2 pruning, then fine-tuning for the epochs of our chain. Ratios are dense / "
             "compressed (params; FLOPs = conv and linear MACs); the qemu speed-up is in arm64 guest instructions.",
             ""]  # fmt: skip
    for m in doc["models"]:
        d = m["dense"]
        rows = [r for r in doc["results"] if r["model"] == m["model"]]
        lines += [f"## {m['model']}", "",
                  f"Dense: {d['accuracy']:.2%} top-1 (test), {d['params']:,} params, {d['flops']:,} MACs, trained "
                  f"{d['epochs_trained']} epochs (best validation at epoch {d['best_epoch']}).", "",
                  "| asked params × | method | params × | FLOPs × | top-1 | Δ vs dense (points) | epochs | seconds "
                  "| qemu speed-up |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in sorted(rows, key=lambda r: (r["asked_params_ratio"], METHODS.index(r["method"]))):
            if r["status"] != "ok":
                lines.append(f"| {r['asked_params_ratio']:g} | {r['method']} | {r['status']} | | | | | "
                             f"{r['seconds']:.0f} | |")  # fmt: skip
                continue
            speed = r["qemu_speedup"]
            shown = f"{speed:.2f}×" if isinstance(speed, int | float) else str(speed or "—")
            lines.append(f"| {r['asked_params_ratio']:g} | {r['method']} | {_fmt_x(r['params_ratio'])} | "
                         f"{_fmt_x(r['flops_ratio'])} | {r['accuracy']:.2%} | {-r['accuracy_drop_points']:+.2f} | "
                         f"{r['epochs']} | {r['seconds']:.0f} | {shown} |")  # fmt: skip
        lines.append("")
    lines += [f"## Summary: the largest reduction within {BAND} points of dense", "",
              "| model | method | params × (top-1) | FLOPs × (top-1) |", "|---|---|---:|---:|"]  # fmt: skip
    for m in doc["models"]:
        for method in doc["methods"]:
            rows = [r for r in doc["results"] if r["model"] == m["model"] and r["method"] == method]
            if not rows:
                continue
            cells = []
            for key in ("params_ratio", "flops_ratio"):
                b = best_within(rows, key)
                cells.append(f"{b[key]:.1f}× ({b['accuracy']:.2%})" if b else "none")
            lines.append(f"| {m['model']} | {method} | {cells[0]} | {cells[1]} |")
    lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], out: Path) -> None:
    models = doc["models"] or [{"model": "", "dense": None}]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    styles = dict(zip(METHODS, ("o--", "s-", "^-", "v:", "D:"), strict=True))
    for ax, m in zip(axes[0], models, strict=True):
        dense = m["dense"]
        for method in doc["methods"]:
            rows = sorted((r for r in doc["results"] if r["model"] == m["model"] and r["method"] == method
                           and r["status"] == "ok"), key=lambda r: r["params_ratio"])  # fmt: skip
            if rows:
                ax.plot([r["params_ratio"] for r in rows], [100 * r["accuracy"] for r in rows], styles[method],
                        label=method)  # fmt: skip
        if dense:
            acc = 100 * dense["accuracy"]
            ax.axhline(acc, color="k", lw=1, label="dense")
            ax.axhspan(acc - BAND, acc, color="k", alpha=0.1, label=f"within {BAND} points of dense")
        ax.set_xscale("log")
        asked = sorted({r["asked_params_ratio"] for r in doc["results"] if r["model"] == m["model"]})
        if asked:  # ticks at the asked ratios; the points sit at the achieved ones
            ax.set_xticks(asked, [f"{x:g}×" for x in asked])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("params reduction (achieved; ticks: asked, log)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(m["model"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write(doc: dict[str, Any], results_dir: Path, name: str, render: Callable[[dict[str, Any]], str] | None = None,
          draw: Callable[[dict[str, Any], Path], None] | None = None) -> None:  # fmt: skip
    """``<name>.json``, ``.md`` and ``.png`` of a results document (by default this benchmark's table and plot)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(doc, indent=2) + "\n", results_dir / f"{name}.json")
    atomic_write_text((render or markdown)(doc), results_dir / f"{name}.md")
    (draw or plot)(doc, results_dir / f"{name}.png")


# ----------------------------------------------------------------------------------------------- main


def parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE (e.g. train.max_batches=4)")
        out[key.strip()] = value.strip()
    return out


def _methods(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise SystemExit(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--plan", action="append", required=True,
                    help="MODEL:RATIO,RATIO,...[:MAX_DENSE_EPOCHS] params ratios (repeatable)")  # fmt: skip
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)} (default all)")
    ap.add_argument("--preset", default="cpu", help="recipe preset of every model (default cpu)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run and the dense model, e.g. train.max_batches=4")  # fmt: skip
    ap.add_argument("--qemu-models", default="resnet18",
                    help="comma list of models benched on qemu-arm64 (instructions); '' for none")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-peers"), help="dense cache and run dirs")
    ap.add_argument("--max-dense-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5, help="dense: stop after this many epochs without a new best")
    ap.add_argument("--out", default="peers", help="results name: <out>.json/.md/.png")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help="where the results go (default benchmarks/results/, or --workdir if --out ends in "
                    "-smoke)")  # fmt: skip
    args = ap.parse_args(argv)
    args.qemu_models = [m.strip() for m in args.qemu_models.split(",") if m.strip()]
    methods, sets = _methods(args.methods), parse_sets(args.set)
    results_dir = args.results_dir or (args.workdir if args.out.endswith("-smoke") else RESULTS)
    plans = []
    for item in args.plan:
        model, ratios, *epochs = item.split(":")
        max_epochs = int(epochs[0]) if epochs else args.max_dense_epochs
        plans.append((model, [float(r) for r in ratios.split(",")], max_epochs))
    command = "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv)
    doc: dict[str, Any] = {"command": command,
                           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                           "date": time.strftime("%Y-%m-%d"), "preset": args.preset, "methods": methods,
                           "sets": sets, "nni_style": NNI, "band_points": BAND, "models": [],
                           "results": []}  # fmt: skip
    total = sum(len(ratios) for _, ratios, _ in plans) * len(methods)
    done = 0
    for model, ratios, max_epochs in plans:
        _log(f"== {model}: dense model (preset {args.preset}, up to {max_epochs} epochs, patience {args.patience})")
        dense_path, dense = train_dense(model, args.preset, args.workdir, sets, max_epochs, args.patience)
        _log(f"   dense: {dense['accuracy']:.2%} top-1, {dense['params']:,} params, {dense['epochs_trained']} epochs")
        epochs = chain_epochs(_config(model, args.preset, args.workdir, {**sets, "search.params_x": ratios[0]}))
        doc["models"].append({"model": model, "dense": dense, "dense_checkpoint": str(dense_path),
                              "chain_epochs": epochs, "qemu": model in args.qemu_models})  # fmt: skip
        for ratio in ratios:
            for method in methods:
                done += 1
                _log(f"[{done}/{total}] {model} {method} at params {ratio:g}×")
                row = run_method(method, model, args.preset, ratio, dense_path, dense, args, sets)
                doc["results"].append(row)
                write(doc, results_dir, args.out)  # every finished run is kept, even if a later one fails
                if row["status"] == "ok":
                    _log(f"[{done}/{total}] {model} {method} at {ratio:g}×: top-1 {row['accuracy']:.2%} "
                         f"({-row['accuracy_drop_points']:+.2f} points), params {row['params_ratio']:.1f}×, FLOPs "
                         f"{row['flops_ratio']:.1f}×, qemu {row['qemu_speedup']}, {row['seconds']:.0f} s")  # fmt: skip
                else:
                    _log(f"[{done}/{total}] {model} {method} at {ratio:g}×: {row['status']}")
    write(doc, results_dir, args.out)
    print(markdown(doc))
    _log(f"results: {results_dir / args.out}.json, .md, .png")


if __name__ == "__main__":
    main()
