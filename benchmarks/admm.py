"""ADMM against one-shot magnitude pruning at the same per-layer rates and the same training budget.

    python -m benchmarks.admm --plan lenet5:0.7,0.8,0.9:40 --plan resnet18:0.9,0.92:12

``--plan MODEL:RATES[:MAX_DENSE_EPOCHS]``.

For each model (its recipe's ``cpu`` preset, the bundled MNIST sample) one dense model is trained until its
validation accuracy stops rising (cached in ``--workdir``), and every variant starts from it. Per rate (the
same rate and scheme in every conv and linear layer):

* ``oneshot``: hard prune the dense model, then masked retraining for the ADMM epochs + the retraining epochs;
* ``admm``: ADMM for ``admm.iterations * admm.epochs_per_iteration`` epochs, hard prune, masked retraining;
* ``admm+purify``: the same model after purification (dead structure, then redundant within the tolerance).

So (a) and (b) train for the same number of epochs, and the gain of (b) is ADMM's. Every variant runs through
the real pipeline stages (ac_toolchain/pipeline/). Writes ``admm.json``, ``admm.md`` and ``admm.png`` to
``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ac_toolchain import config as cfgmod
from ac_toolchain.config import CompressConfig
from ac_toolchain.context import Run, open_run
from ac_toolchain.count import count
from ac_toolchain.pipeline import Stage, new_state, pipeline, run_stages, until
from ac_toolchain.pipeline.rounds import RoundStage
from ac_toolchain.runs import atomic_save, atomic_write_text
from ac_toolchain.scheme_registry import DEFAULT_SCHEME
from ac_toolchain.train import FitSettings, evaluate, fit, make_loader

RESULTS = Path(__file__).parent / "results"


class _Plateau(Exception):
    pass


def _config(model: str, workdir: Path, overrides: dict[str, Any]) -> CompressConfig:
    base = {"run.target": "x86", "run.bench": "none", "run.runs_dir": str(workdir / "runs"),
            "search.method": "uniform", "search.rounds": 1, **overrides}  # one round at the given rate: no search
    return cfgmod.resolve(model, "cpu", base)[0]


def _test(run: Run, model: torch.nn.Module) -> dict[str, Any]:
    acc = evaluate(model, make_loader(run.splits.test, 256, shuffle=False), run.device, label="")
    counts = count(model.cpu(), run.example)
    model.to(run.device)
    return {"accuracy": round(acc, 6), **counts}


def train_dense(model: str, workdir: Path, max_epochs: int, patience: int) -> tuple[Path, dict[str, Any]]:
    """Train until validation accuracy has not risen for ``patience`` epochs; keep the best epoch (cached)."""
    path, info = workdir / f"dense-{model}.pt", workdir / f"dense-{model}.json"
    if path.is_file() and info.is_file():
        return path, json.loads(info.read_text())
    run = open_run(_config(model, workdir, {}))
    state = new_state(run)
    t = run.cfg.train
    best: dict[str, Any] = {"val": -1.0, "epoch": 0, "history": []}

    def watch(epoch: int, ckpt: dict[str, Any]) -> None:
        val = evaluate(state.model, make_loader(run.splits.val, 256, shuffle=False), run.device, label="")
        best["history"].append(round(val, 6))
        if val > best["val"]:
            best.update(val=val, epoch=epoch)
            atomic_save(state.model.state_dict(), path.with_suffix(".tmp.pt"))
        if epoch - best["epoch"] >= patience:
            raise _Plateau

    start = time.perf_counter()
    with contextlib.suppress(_Plateau):
        fit(state.model, run.splits.train, FitSettings(max_epochs, t.lr, t.batch_size, t.momentum, t.weight_decay),
            run.device, seed=run.cfg.run.seed, on_epoch_end=watch, label="dense")  # fmt: skip
    path.with_suffix(".tmp.pt").replace(path)
    state.model.load_state_dict(torch.load(path, weights_only=True))
    result = {"epochs_trained": len(best["history"]), "best_epoch": best["epoch"], "val_history": best["history"],
              "seconds": round(time.perf_counter() - start, 1), **_test(run, state.model)}  # fmt: skip
    atomic_write_text(json.dumps(result, indent=2) + "\n", info)
    return path, result


def _measured(run: Run, stages: list[Stage], after: dict[str, str]) -> dict[str, Any]:
    """Run the stages; measure the model on the test split after each stage named in ``after``."""
    state, out = new_state(run), {}
    for stage in stages:
        state = run_stages(run, [stage], state)
        if stage.name in after:
            out[after[stage.name]] = _test(run, state.model)
    out["seconds"] = round(sum(run.timings.values()), 1)
    purification = state.current().purification
    out["purification"] = dataclasses.asdict(purification) if purification else {}
    return out


def variants(model: str, rate: float, scheme: str, dense: Path, workdir: Path) -> dict[str, Any]:
    common = {"prune.rate": rate, "prune.scheme": scheme, "model.checkpoint": str(dense)}
    admm_cfg = _config(model, workdir, {**common, "prune.method": "admm"})
    admm_epochs = admm_cfg.admm.iterations * admm_cfg.admm.epochs_per_iteration
    retrain = admm_cfg.prune.finetune_epochs
    oneshot_cfg = _config(model, workdir, {**common, "prune.method": "oneshot", "purify.enabled": False,
                                           "prune.finetune_epochs": admm_epochs + retrain})  # fmt: skip
    run = open_run(oneshot_cfg)
    oneshot = _measured(run, until(pipeline(run), RoundStage), {"retrain-r1": "oneshot"})
    run = open_run(admm_cfg)
    admm = _measured(run, until(pipeline(run), RoundStage), {"retrain-r1": "admm", "purify-r1": "admm+purify"})
    return {"rate": rate, "scheme": scheme, "epochs": {"oneshot": admm_epochs + retrain, "admm": admm_epochs + retrain},
            "admm_settings": dataclasses.asdict(admm_cfg.admm), "purify_settings": dataclasses.asdict(admm_cfg.purify),
            "results": {"oneshot": oneshot["oneshot"], "admm": admm["admm"], "admm+purify": admm["admm+purify"]},
            "seconds": {"oneshot": oneshot["seconds"], "admm": admm["seconds"]},
            "purification": admm["purification"]}  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# ADMM vs one-shot pruning (same per-layer rates, same training epochs)", "",
             f"`{doc['command']}` on {doc['machine']}, {doc['date']}.", ""]  # fmt: skip
    for m in doc["models"]:
        d = m["dense"]
        lines += [f"## {m['model']}", "", f"Dense: {d['accuracy']:.2%} top-1 (test), {d['params']:,} params, trained "
                  f"{d['epochs_trained']} epochs (best validation at epoch {d['best_epoch']}).", "",
                  "| rate | scheme | epochs | one-shot | ADMM | ADMM + purify | params ratio (one-shot = ADMM) "
                  "| params ratio after purify |", "|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for v in m["variants"]:
            r = v["results"]
            ratio = d["params"] / r["admm"]["params"]
            purified = d["params"] / r["admm+purify"]["params"]
            lines.append(f"| {v['rate']} | {v['scheme']} | {v['epochs']['admm']} | {r['oneshot']['accuracy']:.2%} | "
                         f"{r['admm']['accuracy']:.2%} | {r['admm+purify']['accuracy']:.2%} | {ratio:.1f}× | "
                         f"{purified:.1f}× |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], out: Path) -> None:
    fig, axes = plt.subplots(1, len(doc["models"]), figsize=(6 * len(doc["models"]), 4), squeeze=False)
    for ax, m in zip(axes[0], doc["models"], strict=True):
        dense = m["dense"]
        for key, style in (("oneshot", "o--"), ("admm", "s-"), ("admm+purify", "^-")):
            xs = [dense["params"] / v["results"][key]["params"] for v in m["variants"]]
            ys = [100 * v["results"][key]["accuracy"] for v in m["variants"]]
            ax.plot(xs, ys, style, label=key)
        ax.axhline(100 * dense["accuracy"], color="k", lw=1, label="dense")
        ax.axhline(100 * dense["accuracy"] - 0.5, color="k", lw=1, ls=":", label="dense − 0.5 points")
        ax.set_xscale("log")
        ax.set_xlabel("params reduction (×, log)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(m["model"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", action="append", required=True,
                    help="MODEL:RATE,RATE,...[:MAX_DENSE_EPOCHS] (repeatable)")  # fmt: skip
    ap.add_argument("--scheme", default=DEFAULT_SCHEME)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-admm"), help="dense cache and run dirs")
    ap.add_argument("--max-dense-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5, help="dense: stop after this many epochs without a new best")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    doc: dict[str, Any] = {"command": "python -m benchmarks.admm " + " ".join(f"--plan {p}" for p in args.plan),
                           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                           "date": time.strftime("%Y-%m-%d"), "models": []}  # fmt: skip
    for item in args.plan:
        model, rates, *epochs = item.split(":")
        max_epochs = int(epochs[0]) if epochs else args.max_dense_epochs
        dense_path, dense = train_dense(model, args.workdir, max_epochs, args.patience)
        entry = {"model": model, "dense": dense, "variants": []}
        doc["models"].append(entry)
        for rate in (float(r) for r in rates.split(",")):
            entry["variants"].append(variants(model, rate, args.scheme, dense_path, args.workdir))
            _write(doc, args.out)  # every finished variant is kept, even if a later one fails
    print(markdown(doc))


def _write(doc: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(doc, indent=2) + "\n", out / "admm.json")
    atomic_write_text(markdown(doc), out / "admm.md")
    plot(doc, out / "admm.png")


if __name__ == "__main__":
    main()
