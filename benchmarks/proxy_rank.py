"""How well the search's quick proxy ranks proposals: Spearman correlation between proxy accuracy and the
final accuracy after the whole round (ADMM, hard prune + retrain, purification) for the same specs.

    python -m benchmarks.proxy_rank --model lenet5 --params-x 20 --proposals 8 --proxy-steps 0,8,32

One search run (``ac compress MODEL --params-x X --search-rounds 1``) makes the dense model and the proposals
(``search.jsonl``); ``--proposals`` distinct specs spread over its proxy accuracies are then each run through
the same round from the same dense model (``--search uniform --prune-rates SPEC --dense dense.pt``). The same
specs are then scored again by a proxy with each ``search.proxy_steps`` of ``--proxy-steps`` (from the same dense
model, as the search's first round scores them), so every proxy setting is ranked against the same final
accuracies; Spearman's rho and the proposals per minute of each setting are reported. Writes
``benchmarks/results/proxy_rank-<model>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy.stats import spearmanr

from ac_toolchain import config as cfgmod
from ac_toolchain.compress import compress
from ac_toolchain.context import build, example_input, load_splits
from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.graph import trace
from ac_toolchain.prune.spec import parse_spec
from ac_toolchain.runs import load_state_dict
from ac_toolchain.search.proxy import Proxy, ProxySettings
from ac_toolchain.search.space import Space
from ac_toolchain.train import pick_device
from benchmarks.peers import parse_sets

RESULTS = Path(__file__).parent / "results"


def _spread(lines: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` distinct specs spread evenly over the sorted proxy accuracies."""
    unique = {json.dumps(x["spec"], sort_keys=True): x for x in lines}
    ranked = sorted(unique.values(), key=lambda x: x["point"]["accuracy"])
    if len(ranked) < n:
        raise SystemExit(f"the search made only {len(ranked)} distinct proposals; ask for fewer than {n}")
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def rescore(run_dir: Path, specs: list[dict[str, Any]], steps: int) -> tuple[list[float], float]:
    """Proxy accuracies of ``specs`` with ``search.proxy_steps = steps``, from the run's dense model (as its first
    round's search scores them), and the proposals scored per minute."""
    cfg = cfgmod.load(run_dir / "config.toml")
    cfg.search.proxy_steps = steps
    splits, device, example = load_splits(cfg), pick_device(cfg.run.device), example_input(cfg)
    model = build(cfg, splits.num_classes)
    load_state_dict(model, run_dir / "dense.pt")
    space = Space(trace(model, example), "params", called_modules(model, example))
    settings = ProxySettings.from_config(cfg.search, cfg.train, lr=cfg.prune.finetune_lr, seed=cfg.run.seed)
    proxy = Proxy(model, space.masks, splits.train, splits.val, device, settings,
                  example=example if cfg.prune.compact else None)  # fmt: skip
    scores = [proxy(parse_spec(spec, "search.jsonl")) for spec in specs]
    return scores, proxy.per_minute


def _round(model: str, preset: str, overrides: dict[str, Any], workdir: Path) -> dict[str, Any]:
    overrides = {"run.target": "x86", "run.bench": "none", "run.runs_dir": str(workdir / "runs"),
                 "search.rounds": 1, **overrides}  # one round: every proposal is scored against the same target
    return asdict(compress(model, preset, overrides))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--params-x", type=float, default=30.0)
    ap.add_argument("--proposals", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=Path("runs/proxy_rank"))
    ap.add_argument("--proxy-steps", default="0", help="comma list of search.proxy_steps to rank (default 0)")
    ap.add_argument("--dense", type=Path, help="a trained dense model to start from (default: train one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    args = ap.parse_args()
    start = time.perf_counter()
    given = {**parse_sets(args.set), **({"model.checkpoint": str(args.dense)} if args.dense else {})}
    first = {**given, "search.params_x": args.params_x, "search.proxy_steps": 0}
    search = _round(args.model, args.preset, first, args.workdir)
    run_dir = Path(search["artifacts"]["report.json"]).parent
    lines = [json.loads(x) for x in (run_dir / "search.jsonl").read_text().splitlines()]
    rows = []
    for i, line in enumerate(_spread(lines, args.proposals)):
        spec = args.workdir / f"spec-{i}.json"
        spec.write_text(json.dumps(line["spec"], indent=2))
        layerwise = {k: v for k, v in given.items() if k not in ("prune.rate", "prune.scheme")}  # the spec sets them
        fixed = {**layerwise, "search.method": "uniform", "prune.rates": str(spec),
                 "model.checkpoint": str(run_dir / "dense.pt")}  # fmt: skip
        report = _round(args.model, args.preset, fixed, args.workdir)
        rows.append({"proxy": line["point"]["accuracy"], "final": report["compressed"]["accuracy"],
                     "ratio": report["ratios"]["params"], "index": line["index"]})  # fmt: skip
        print(f"proposal {line['index']}: proxy {rows[-1]['proxy']:.2%} -> final {rows[-1]['final']:.2%}", flush=True)
    settings = []
    for steps in (int(x) for x in args.proxy_steps.split(",")):
        scores, per_minute = rescore(run_dir, [line["spec"] for line in _spread(lines, args.proposals)], steps)
        for row, score in zip(rows, scores, strict=True):
            row[f"proxy_{steps}"] = score
        rho, p = spearmanr(scores, [r["final"] for r in rows])
        settings.append({"proxy_steps": steps, "spearman": round(float(rho), 4), "p_value": round(float(p), 4),
                         "proposals_per_minute": round(per_minute, 1)})  # fmt: skip
        print(f"proxy_steps {steps}: Spearman {rho:.3f}, {per_minute:.1f} proposals / minute", flush=True)
    result = {"model": args.model, "preset": args.preset, "params_x": args.params_x, "overrides": given,
              "settings": settings,
              "dense_accuracy": search["dense"]["accuracy"], "rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    _write(result, RESULTS / f"proxy_rank-{args.model}")


def _write(result: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows, settings = result["rows"], result["settings"]
    lines = [f"# Proxy vs final accuracy: {result['model']} at {result['params_x']}x params", "",
             f"{len(rows)} proposals of one search, each run through the whole round (final: test top-1); dense "
             f"{result['dense_accuracy']:.2%}. Each proxy setting scores the same proposals from the same dense "
             "model (validation top-1).", "", f"Preset `{result['preset']}`, overrides: "
             f"`{json.dumps(result.get('overrides', {}))}`.", "",
             "| search.proxy_steps | Spearman rho (p) | proposals / minute |", "|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {s['proxy_steps']} | {s['spearman']} ({s['p_value']}) | {s['proposals_per_minute']} |"
              for s in settings]  # fmt: skip
    lines += ["", "| proposal | final (test) | params ÷ | " + " | ".join(f"proxy, {s['proxy_steps']} steps"
              for s in settings) + " |", "|---:|---:|---:|" + "---:|" * len(settings)]  # fmt: skip
    keys = [f"proxy_{s['proxy_steps']}" for s in settings]
    lines += [f"| {r['index']} | {r['final']:.2%} | {r['ratio']:.1f}× | " + " | ".join(f"{r[k]:.2%}" for k in keys)
              + " |" for r in rows]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for s in settings:
        ax.scatter([100 * r[f"proxy_{s['proxy_steps']}"] for r in rows], [100 * r["final"] for r in rows],
                   label=f"{s['proxy_steps']} steps: rho {s['spearman']}")  # fmt: skip
    ax.set_xlabel("proxy accuracy (%, validation)")
    ax.set_ylabel("final accuracy (%, after the round, test)")
    ax.set_title(f"{result['model']} {result['params_x']:g}x: proxy vs final")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
