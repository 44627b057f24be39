"""Frontier: test top-1 against params reduction past each model's cliff, over seeds, with paired differences.

    python -m benchmarks.frontier --plan lenet5:10,20,40,80 --seeds 0,1,2 --methods ours,uniform,tp-global,tp-uniform
    python -m benchmarks.frontier --plan lenet5:20 --seeds 0,1,2 --methods ladder --out frontier-ladder-lenet5

A **seed** changes the data split (train / validation / test) and the dense initialisation. Per model and seed
ONE dense model is trained for ``--dense-epochs`` with cosine decay to zero, until validation top-1 is flat
(``benchmarks.peers.train_dense``; the last epoch kept, not the best of a noisy split; cached in
``<workdir>/seed-<s>/``); every method of that seed starts from it, on its
splits, for the same total training epochs (``benchmarks.peers.chain_epochs`` of the preset: Torch-Pruning
fine-tunes that many epochs; every rung of the ladder splits that many epochs between ADMM and retraining).

**Methods** (``METHODS``): our chain with config overrides, or Torch-Pruning one shot + fine-tuning
(``tp-uniform``, ``tp-global``; ``pip install -e '.[peers]'``). ``ladder`` expands to the diagnosis, each rung
adding one part of our chain to the one before it: one-shot pruning at a uniform filter rate with all epochs
as fine-tuning, then rounds, ADMM, purification, filter+column, the search (= ``ours``).

**Statistics.** Per method and ratio: mean and sample std over seeds. Per pair of methods: the per-seed paired
difference (same dense model, same splits), its mean and a two-sided 95 % Student-t interval over seeds
(``scipy.stats.t``). Seeds, not test images, are the unit: a seed redraws the split and the dense model, which
is the variation a user meets; with 3 seeds the interval is wide (t = 4.30), and a difference whose interval
holds 0 is reported as not distinguishable. Our runs also record each round's validation and test top-1 after
retraining and after purification, so that decisions fitted to the validation split show as a gap.

Resumable: results are ``<results-dir>/<out>.json`` (+ ``.md``, ``.png``), rewritten after every run; a run
already there (model, seed, method, asked ratio) is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
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
from scipy import stats

from ac_toolchain import config as cfgmod
from ac_toolchain.compress import compress
from ac_toolchain.config import CompressConfig
from ac_toolchain.context import build, load_splits
from ac_toolchain.runs import new_run_dir, safe_load
from ac_toolchain.train import evaluate, make_loader, pick_device
from benchmarks import peers
from benchmarks.peers import _bench_overrides, _config, chain_epochs, run_tp, train_dense

RESULTS = Path(__file__).parent / "results"
BANDS = (0.5, 1.0)  # points below dense that count as "kept"
Overrides = Callable[[CompressConfig], dict[str, Any]]


def _oneshot(cfg: CompressConfig) -> dict[str, Any]:
    """One round, no ADMM, filters at one uniform rate, no purification: every epoch is fine-tuning."""
    return {"search.method": "uniform", "prune.method": "oneshot", "search.rounds": 1, "prune.scheme": "filter",
            "purify.enabled": False, "prune.finetune_epochs": chain_epochs(cfg)}  # fmt: skip


def _rounds(cfg: CompressConfig) -> dict[str, Any]:
    """The preset's rounds, still one-shot: the epochs split evenly between rounds."""
    rounds = cfg.search.rounds
    return {**_oneshot(cfg), "search.rounds": rounds, "prune.finetune_epochs": chain_epochs(cfg) // rounds}


def _admm(cfg: CompressConfig) -> dict[str, Any]:
    """Rounds with the preset's ADMM and retraining epochs (the preset's own total)."""
    return {**_rounds(cfg), "prune.method": "admm", "prune.finetune_epochs": cfg.prune.finetune_epochs}


def _purify(cfg: CompressConfig) -> dict[str, Any]:
    return {**_admm(cfg), "purify.enabled": True, "purify.criterion": "tolerance"}


def _filter_column(cfg: CompressConfig) -> dict[str, Any]:
    return {**_purify(cfg), "prune.scheme": "filter+column"}


def _ours(cfg: CompressConfig) -> dict[str, Any]:
    return {**_filter_column(cfg), "search.method": "anneal"}


def _distill(cfg: CompressConfig) -> dict[str, Any]:
    return {**_ours(cfg), "distill.enabled": True}


def _paired(cfg: CompressConfig) -> dict[str, Any]:
    return {**_distill(cfg), "purify.criterion": "paired"}


def _oneshot_fc(cfg: CompressConfig) -> dict[str, Any]:
    return {**_oneshot(cfg), "prune.scheme": "filter+column"}


def _lean(cfg: CompressConfig) -> dict[str, Any]:
    """What the ladder supports: one round, one shot, filter+column, paired purification, the search, distillation."""
    return {**_oneshot_fc(cfg), "purify.enabled": True, "purify.criterion": "paired", "search.method": "anneal",
            "distill.enabled": True}  # fmt: skip


def _lean_uniform(cfg: CompressConfig) -> dict[str, Any]:
    return {**_lean(cfg), "search.method": "uniform"}


def _lean_no_distill(cfg: CompressConfig) -> dict[str, Any]:
    return {**_lean(cfg), "distill.enabled": False}


def _lean_no_purify(cfg: CompressConfig) -> dict[str, Any]:
    return {**_lean(cfg), "purify.enabled": False}


def _lean_admm(cfg: CompressConfig) -> dict[str, Any]:
    """lean with one round of the preset's ADMM iterations before hard pruning; retraining gets the rest."""
    admm = cfg.admm.iterations * cfg.admm.epochs_per_iteration
    return {**_lean(cfg), "prune.method": "admm", "prune.finetune_epochs": chain_epochs(cfg) - admm}


def _oneshot_distill(cfg: CompressConfig) -> dict[str, Any]:
    return {**_oneshot(cfg), "distill.enabled": True}


def _search_filter(cfg: CompressConfig) -> dict[str, Any]:
    """oneshot-distill with per-layer filter rates from the search, each proposal fine-tuned for
    ``PROXY_STEPS`` masked steps on its compacted model before it is scored."""
    return {**_oneshot_distill(cfg), "search.method": "anneal", "search.scheme_moves": False,
            "search.proxy_steps": PROXY_STEPS}  # fmt: skip


PROXY_STEPS = 32  # proxy fine-tune steps of the filter search (proxy_rank: ranks better at 32 than at 0 or 8)

# name -> overrides of our chain (from the preset's resolved config), or None for a Torch-Pruning mode
METHODS: dict[str, Overrides | None] = {
    "oneshot": _oneshot, "+rounds": _rounds, "+admm": _admm, "+purify": _purify, "uniform": _filter_column,
    "ours": _ours, "+distill": _distill, "+paired": _paired, "oneshot-fc": _oneshot_fc, "lean": _lean,
    "lean-uniform": _lean_uniform, "lean-no-distill": _lean_no_distill, "lean-no-purify": _lean_no_purify,
    "lean+admm": _lean_admm, "oneshot-distill": _oneshot_distill, "search-filter": _search_filter,
    "tp-uniform": None, "tp-global": None,
}  # fmt: skip
LADDER = ("oneshot", "+rounds", "+admm", "+purify", "uniform", "ours")
LADDER_NOTE = {"oneshot": "one-shot filters, uniform rate, all epochs fine-tuning", "+rounds": "+ the preset's rounds",
               "+admm": "+ ADMM in every round", "+purify": "+ purification",
               "uniform": "+ filter+column scheme", "ours": "+ the search (our chain)"}  # fmt: skip
PLOTTED = ("oneshot", "ours", "+paired", "lean", "lean-uniform", "oneshot-distill", "search-filter", "tp-global",
           "tp-uniform")  # the frontier plot's lines
LEVERS = ("+distill", "+paired", "oneshot-fc", "lean", "lean-uniform")
ABLATION = ("lean", "lean-uniform", "lean-no-distill", "lean-no-purify", "lean+admm")  # lean with one part changed
LEVER_NOTE = {"+distill": "ours + distillation from the dense model", "+paired": "+distill + paired purification",
              "oneshot-fc": "oneshot with filter+column", "lean": "one round, one shot, filter+column, paired "
              "purification, the search, distillation", "lean-uniform": "lean at one uniform rate",
              "lean-no-distill": "lean without distillation", "lean-no-purify": "lean without purification",
              "lean+admm": "lean with ADMM before hard pruning (same epochs)",
              "oneshot-distill": "oneshot + distillation", "search-filter": "oneshot-distill with per-layer "
              f"filter rates from the search ({PROXY_STEPS} proxy fine-tune steps per proposal)"}  # fmt: skip
PAIRS = (("ours", "tp-global"), ("ours", "tp-uniform"), ("ours", "uniform"), ("oneshot", "tp-uniform"),
         ("+distill", "ours"), ("+paired", "+distill"), ("oneshot-fc", "oneshot"), ("lean", "oneshot-fc"),
         ("lean", "lean-uniform"), ("lean", "tp-global"), ("lean", "tp-uniform"), ("lean", "ours"),
         ("lean", "lean-no-distill"), ("lean", "lean-no-purify"), ("lean", "lean+admm"),
         ("lean-uniform", "tp-global"), ("lean-uniform", "tp-uniform"), ("+paired", "tp-global"),
         ("oneshot-distill", "oneshot"), ("oneshot-distill", "tp-global"), ("oneshot-distill", "tp-uniform"),
         ("search-filter", "oneshot-distill"), ("search-filter", "tp-global"), ("search-filter", "tp-uniform"),
         ("oneshot", "tp-global"))  # fmt: skip


def _log(text: str) -> None:
    print(text, flush=True)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------- runs


def _accuracy(net: torch.nn.Module, split: Any, device: torch.device) -> float:
    return round(evaluate(net, make_loader(split, 256, shuffle=False), device, label=""), 6)


def round_trace(run_dir: Path, cfg: CompressConfig) -> list[dict[str, Any]]:
    """Validation and test top-1 of each round's retrained and purified model (the run's saved products)."""
    splits, device = load_splits(cfg), pick_device(cfg.run.device)
    net = build(cfg, splits.num_classes).to(device)
    out = []
    for r in range(1, cfg.search.rounds + 1):
        folder = run_dir / "rounds" / str(r)
        products = {"retrained": folder / "retrained.pt", "purified": folder / "purified.pt"}
        for stage, path in products.items():
            if not path.is_file():
                continue
            state = safe_load(path)
            net.load_state_dict(state.get("model", state))
            out.append({"round": r, "stage": stage, "val": _accuracy(net, splits.val, device),
                        "test": _accuracy(net, splits.test, device)})  # fmt: skip
    return out


def run_chain(method: str, model: str, preset: str, ratio: float, dense: Path, workdir: Path,
              sets: dict[str, Any], qemu: bool) -> dict[str, Any]:  # fmt: skip
    """Our chain with the method's overrides, from the seed's dense model."""
    base = _config(model, preset, workdir, sets)
    rule = METHODS[method]
    assert rule is not None
    overrides = {**sets, **rule(base), "search.params_x": ratio, "model.checkpoint": str(dense),
                 **_bench_overrides(qemu)}  # fmt: skip
    cfg = _config(model, preset, workdir, overrides)
    run_dir = new_run_dir(cfg.run.runs_dir, cfg.model.arch, f"{method.strip('+')}-{cfg.run.target}")
    cfgmod.save(cfg, run_dir / "config.toml")
    report = asdict(compress(cfg, run_dir=run_dir))
    entry = report.get("bench", {}).get("qemu-arm64") if qemu else None
    return {"params": report["compressed"]["params"], "flops": report["compressed"]["flops"],
            "accuracy": report["compressed"]["accuracy"], "epochs": chain_epochs(cfg),
            "qemu_speedup": entry["speedup"] if entry else None, "run_dir": str(run_dir),
            "rounds": round_trace(run_dir, cfg),
            "overrides": {k: v for k, v in overrides.items() if k != "model.checkpoint"}}  # fmt: skip


def run_one(method: str, model: str, preset: str, ratio: float, seed: int, dense: tuple[Path, dict[str, Any]],
            workdir: Path, sets: dict[str, Any], qemu: bool) -> dict[str, Any]:  # fmt: skip
    path, info = dense
    row: dict[str, Any] = {"model": model, "seed": seed, "method": method, "asked_params_ratio": ratio,
                           "dense_accuracy": info["accuracy"], "commit": _commit()}  # fmt: skip
    start = time.perf_counter()
    try:
        if METHODS[method] is None:
            got = run_tp(method.removeprefix("tp-"), model, preset, ratio, path, workdir, sets, qemu)
        else:
            got = run_chain(method, model, preset, ratio, path, workdir, sets, qemu)
    except ValueError as exc:  # Torch-Pruning cannot reach the ratio (our errors are ACError, not ValueError)
        if METHODS[method] is not None:
            raise
        return {**row, "status": f"failed: {exc}", "seconds": round(time.perf_counter() - start, 1)}
    got.pop("qemu", None)
    return {**row, **got, "status": "ok", "params_ratio": round(info["params"] / got["params"], 3),
            "flops_ratio": round(info["flops"] / got["flops"], 3),
            "delta_points": round(100 * (got["accuracy"] - info["accuracy"]), 3),
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


# ----------------------------------------------------------------------------------------------- statistics


def summary(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one value) of a list."""
    a = np.asarray(values, dtype=float)
    return {"n": len(a), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def paired_interval(a: list[float], b: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of ``a - b`` (paired by position) and its two-sided Student-t interval; None bounds for one pair."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, mean = len(d), float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None, "verdict": "one seed: no interval"}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    verdict = "ahead" if low > 0 else "behind" if high < 0 else "not distinguishable"
    return {"n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def _ok(rows: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and all(r[k] == v for k, v in where.items())]


def cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Any]]:
    """(model, method, asked ratio) -> mean / std of accuracy and delta (points), mean achieved ratio."""
    out = {}
    for key in sorted({(r["model"], r["method"], r["asked_params_ratio"]) for r in _ok(rows)}):
        group = _ok(rows, model=key[0], method=key[1], asked_params_ratio=key[2])
        out[key] = {"accuracy": summary([100 * r["accuracy"] for r in group]),
                    "delta": summary([r["delta_points"] for r in group]),
                    "params_ratio": float(np.exp(np.mean([np.log(r["params_ratio"]) for r in group])))}  # fmt: skip
    return out


def pair(rows: list[dict[str, Any]], model: str, ratio: float, a: str, b: str) -> dict[str, Any] | None:
    """The paired difference a − b (points) over the seeds both have at this ratio."""
    by_seed = {m: {r["seed"]: 100 * r["accuracy"] for r in _ok(rows, model=model, method=m, asked_params_ratio=ratio)}
               for m in (a, b)}  # fmt: skip
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if not seeds:
        return None
    return paired_interval([by_seed[a][s] for s in seeds], [by_seed[b][s] for s in seeds])


def kept(rows: list[dict[str, Any]], model: str, method: str, band: float) -> tuple[float, float] | None:
    """(asked ratio, mean achieved ratio) of the largest asked ratio whose mean delta over seeds is >= -band."""
    table = {k[2]: v for k, v in cells(rows).items() if k[0] == model and k[1] == method}
    fine = [ratio for ratio, v in table.items() if v["delta"]["mean"] >= -band - 1e-9]
    return (max(fine), table[max(fine)]["params_ratio"]) if fine else None


# ----------------------------------------------------------------------------------------------- outputs


def _ci(p: dict[str, Any] | None) -> str:
    if p is None:
        return "—"
    if p["low"] is None:
        return f"{p['mean']:+.2f} (n=1)"
    return f"{p['mean']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}] {p['verdict']} (n={p['n']})"


def _frontier_table(doc: dict[str, Any], model: str) -> list[str]:
    """Methods as rows, asked ratios as columns: mean ± std of test top-1, achieved ratio, seeds."""
    table = {k[1:]: v for k, v in cells(doc["results"]).items() if k[0] == model}
    methods = [m for m in METHODS if any(k[0] == m for k in table)]
    ratios = sorted({k[1] for k in table})
    lines = ["| method | " + " | ".join(f"{r:g}×" for r in ratios) + " |", "|---|" + "---:|" * len(ratios)]
    for m in methods:
        row = []
        for ratio in ratios:
            v = table.get((m, ratio))
            row.append("—" if v is None else f"{v['accuracy']['mean']:.2f} ± {v['accuracy']['std']:.2f} "
                       f"({v['params_ratio']:.0f}×, n={v['accuracy']['n']})")  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _pairs_table(doc: dict[str, Any], model: str) -> list[str]:
    ratios = sorted({r["asked_params_ratio"] for r in _ok(doc["results"], model=model)})
    lines = ["| asked params × | pair | mean difference (points) [95 % t-interval] |", "|---:|---|---|"]
    pairs = list(dict.fromkeys([*PAIRS, *zip(LADDER[1:], LADDER[:-1], strict=True)]))
    for ratio in ratios:
        for a, b in pairs:
            p = pair(doc["results"], model, ratio, a, b)
            if p is not None:
                lines.append(f"| {ratio:g} | {a} − {b} | {_ci(p)} |")
    return lines


def _rounds_table(doc: dict[str, Any], model: str) -> list[str]:
    """Per method, ratio, round and stage: mean validation and test top-1 over seeds, and their gap."""
    groups: dict[tuple[str, float, int, str], list[dict[str, Any]]] = {}
    for r in _ok(doc["results"], model=model):
        for t in r.get("rounds", []):
            groups.setdefault((r["method"], r["asked_params_ratio"], t["round"], t["stage"]), []).append(t)
    lines = ["| method | asked × | round | stage | validation | test | validation − test (points) | n |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for (method, ratio, rnd, stage), ts in groups.items():
        val, test = np.mean([t["val"] for t in ts]), np.mean([t["test"] for t in ts])
        lines.append(f"| {method} | {ratio:g} | {rnd} | {stage} | {val:.2%} | {test:.2%} | {100 * (val - test):+.2f} "
                     f"| {len(ts)} |")  # fmt: skip
    return lines


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# Frontier: test top-1 vs params reduction, over seeds (same dense model and splits per seed)", "",
             " then ".join(f"`{c}`" for c in doc.get("commands", [doc["command"]]))
             + f" on {doc['machine']}, {doc['date']} (preset `{doc['preset']}`).", "",
             "Cells: mean ± std of test top-1 (%) over seeds, the geometric mean of the achieved params ratio, and "
             "the number of seeds. Differences are paired by seed; the interval is a two-sided 95 % Student-t "
             "interval over seeds.", ""]  # fmt: skip
    for m in doc["models"]:
        name = m["model"]
        dense = ", ".join(f"seed {d['seed']}: {d['accuracy']:.2%} ({d['epochs_trained']} epochs)" for d in m["dense"])
        lines += [f"## {name}", "", f"Dense (test top-1): {dense}. Every method trains {m['chain_epochs']} epochs "
                  "after the dense model.", "", *_frontier_table(doc, name), "", "### Paired differences", "",
                  *_pairs_table(doc, name), "", "### Largest asked ratio kept (mean over seeds)", "",
                  "| method | " + " | ".join(f"within {b} points" for b in BANDS) + " |",
                  "|---|" + "---:|" * len(BANDS)]  # fmt: skip
        for method in [m for m in METHODS if _ok(doc["results"], model=name, method=m)]:
            got = [kept(doc["results"], name, method, b) for b in BANDS]
            lines.append(f"| {method} | " + " | ".join(f"{k[0]:g} ({k[1]:.0f}×)" if k else "none" for k in got) + " |")
        lines += ["", "### Each round: validation vs test", "", *_rounds_table(doc, name), ""]
    notes, present = {**LADDER_NOTE, **LEVER_NOTE}, {r["method"] for r in _ok(doc["results"])}
    lines += ["## Methods", "", *[f"- `{k}`: {v}" for k, v in notes.items() if k in present],
              "- `tp-uniform` / `tp-global`: Torch-Pruning's group-L2 pruner one shot (one ratio in every group / one "
              "global ranking), then fine-tuning for the same epochs", ""]  # fmt: skip
    return "\n".join(lines)


def plot(doc: dict[str, Any], out: Path) -> None:
    models = doc["models"] or [{"model": ""}]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    table = cells(doc["results"])
    for ax, m in zip(axes[0], models, strict=True):
        for method in [x for x in PLOTTED if _ok(doc["results"], model=m["model"], method=x)]:
            pts = sorted((v["params_ratio"], v["accuracy"]) for k, v in table.items()
                         if k[0] == m["model"] and k[1] == method)  # fmt: skip
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts], yerr=[p[1]["std"] for p in pts],
                            marker="o", capsize=3, label=method)  # fmt: skip
        dense = [100 * d["accuracy"] for d in m.get("dense", [])]
        if dense:
            ax.axhline(float(np.mean(dense)), color="k", lw=1, label="dense (mean)")
        ax.set_xscale("log")
        ax.set_xlabel("params reduction (achieved, geometric mean over seeds; log)")
        ax.set_ylabel("test top-1 (%): mean ± std over seeds")
        ax.set_title(m["model"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write(doc: dict[str, Any], results_dir: Path, name: str) -> None:
    peers.write(doc, results_dir, name, markdown, plot)


# ----------------------------------------------------------------------------------------------- main


def _methods(text: str) -> list[str]:
    for group, names in (("ladder", LADDER), ("levers", LEVERS), ("ablation", ABLATION)):
        text = text.replace(group, ",".join(names))
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise SystemExit(f"--methods: unknown {', '.join(unknown) or '(none)'}; choose from ladder, levers, ablation, "
                         f"{', '.join(METHODS)}")  # fmt: skip
    return list(dict.fromkeys(chosen))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--plan", action="append", required=True, help="MODEL:RATIO,RATIO,... params ratios (repeatable)")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of seeds (split + dense init); default 0,1,2")
    ap.add_argument("--methods", default="ours,uniform,tp-global,tp-uniform",
                    help=f"comma list of ladder, levers, ablation, {', '.join(METHODS)}")  # fmt: skip
    ap.add_argument("--preset", default="cpu", help="recipe preset of every model (default cpu)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    ap.add_argument("--qemu-models", default="resnet18", help="comma list of models benched on qemu-arm64; '' none")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-frontier"), help="dense cache and run dirs")
    ap.add_argument("--dense-epochs", type=int, default=30, help="dense training epochs (cosine to zero; last kept)")
    ap.add_argument("--out", default="frontier", help="results name: <out>.json/.md/.png")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="only rewrite <out>.md and .png from <out>.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    methods, seeds = _methods(args.methods), [int(s) for s in args.seeds.split(",")]
    sets = dict(item.split("=", 1) for item in args.set)
    qemu_models = {m.strip() for m in args.qemu_models.split(",") if m.strip()}
    path = args.results_dir / f"{args.out}.json"
    old = json.loads(path.read_text()) if path.is_file() else {"results": []}
    if args.render:
        write(old, args.results_dir, args.out)
        return
    command = "python -m benchmarks.frontier " + " ".join(sys.argv[1:] if argv is None else argv)
    earlier = old.get("commands", [old["command"]] if "command" in old else [])  # the sittings before this one
    planned = {item.split(":")[0] for item in args.plan}
    doc: dict[str, Any] = {"command": command, "commands": [*earlier, command],
                           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                           "date": time.strftime("%Y-%m-%d"), "preset": args.preset, "methods": methods, "sets": sets,
                           "models": [m for m in old.get("models", []) if m["model"] not in planned],
                           "results": [r for r in old["results"] if r.get("status") == "ok"]}  # fmt: skip
    kept = {m["model"]: m.get("dense", []) for m in old.get("models", [])}  # dense models of other seeds stay
    done = {(r["model"], r["seed"], r["method"], r["asked_params_ratio"]) for r in doc["results"]}
    for item in args.plan:
        model, ratios = item.split(":")[0], [float(x) for x in item.split(":")[1].split(",")]
        others = [d for d in kept.get(model, []) if d["seed"] not in seeds]
        entry: dict[str, Any] = {"model": model, "dense": others, "chain_epochs": chain_epochs(
            _config(model, args.preset, args.workdir, sets))}  # fmt: skip
        doc["models"].append(entry)
        for seed in seeds:
            seeded, work = {**sets, "run.seed": seed}, args.workdir / f"seed-{seed}"
            dense = train_dense(model, args.preset, work, seeded, args.dense_epochs, patience=0)
            entry["dense"].append({"seed": seed, **{k: dense[1][k] for k in ("accuracy", "epochs_trained", "params")}})
            for ratio in ratios:
                for method in methods:
                    if (model, seed, method, ratio) in done:
                        continue
                    _log(f"== {model} seed {seed} {method} at {ratio:g}x")
                    row = run_one(method, model, args.preset, ratio, seed, dense, work, seeded, model in qemu_models)
                    doc["results"].append(row)
                    write(doc, args.results_dir, args.out)
                    _log(f"   {row['status']}: top-1 {row.get('accuracy', 0):.2%} ({row.get('delta_points', 0):+.2f}"
                         f" points) at {row.get('params_ratio', 0):.1f}x, {row['seconds']:.0f} s")  # fmt: skip
    write(doc, args.results_dir, args.out)
    _log(f"results: {args.results_dir / args.out}.json, .md, .png")


if __name__ == "__main__":
    main()
