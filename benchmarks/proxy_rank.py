"""How well the search's quick proxy ranks proposals: Spearman correlation between proxy accuracy and the
final accuracy after the whole round (ADMM, hard prune + retrain, purification) for the same specs.

    python -m benchmarks.proxy_rank --model lenet5 --params-x 30 --proposals 8

One search run (``ac compress MODEL --params-x X --search-rounds 1``) makes the dense model and the proposals
(``search.jsonl``); ``--proposals`` distinct specs spread over its proxy accuracies are then each run through
the same round from the same dense model (``--search uniform --prune-rates SPEC --dense dense.pt``). Writes
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

from ac_toolchain.compress import compress

RESULTS = Path(__file__).parent / "results"


def _spread(lines: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` distinct specs spread evenly over the sorted proxy accuracies."""
    unique = {json.dumps(x["spec"], sort_keys=True): x for x in lines}
    ranked = sorted(unique.values(), key=lambda x: x["point"]["accuracy"])
    if len(ranked) < n:
        raise SystemExit(f"the search made only {len(ranked)} distinct proposals; ask for fewer than {n}")
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


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
    args = ap.parse_args()
    start = time.perf_counter()
    search = _round(args.model, args.preset, {"search.params_x": args.params_x}, args.workdir)
    run_dir = Path(search["artifacts"]["report.json"]).parent
    lines = [json.loads(x) for x in (run_dir / "search.jsonl").read_text().splitlines()]
    rows = []
    for i, line in enumerate(_spread(lines, args.proposals)):
        spec = args.workdir / f"spec-{i}.json"
        spec.write_text(json.dumps(line["spec"], indent=2))
        fixed = {"search.method": "uniform", "prune.rates": str(spec), "model.checkpoint": str(run_dir / "dense.pt")}
        report = _round(args.model, args.preset, fixed, args.workdir)
        rows.append({"proxy": line["point"]["accuracy"], "final": report["compressed"]["accuracy"],
                     "ratio": report["ratios"]["params"], "index": line["index"]})  # fmt: skip
        print(f"proposal {line['index']}: proxy {rows[-1]['proxy']:.2%} -> final {rows[-1]['final']:.2%}", flush=True)
    rho, p = spearmanr([r["proxy"] for r in rows], [r["final"] for r in rows])
    result = {"model": args.model, "preset": args.preset, "params_x": args.params_x, "spearman": round(float(rho), 4),
              "p_value": round(float(p), 4), "dense_accuracy": search["dense"]["accuracy"],
              "proposals_per_minute": search["search"][0]["proposals_per_minute"], "rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    _write(result, RESULTS / f"proxy_rank-{args.model}")


def _write(result: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Proxy vs final accuracy: {result['model']} at {result['params_x']}x params", "",
             f"Spearman rho = {result['spearman']} (p = {result['p_value']}) over {len(result['rows'])} proposals; "
             f"proxy speed {result['proposals_per_minute']} proposals / minute; dense {result['dense_accuracy']:.2%}.",
             "", "| proposal | proxy (val) | final (test) | params ÷ |", "|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['index']} | {r['proxy']:.2%} | {r['final']:.2%} | {r['ratio']:.1f}× |" for r in result["rows"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([100 * r["proxy"] for r in result["rows"]], [100 * r["final"] for r in result["rows"]])
    ax.set_xlabel("proxy accuracy (%, one-shot + BN re-estimated, validation)")
    ax.set_ylabel("final accuracy (%, after the round, test)")
    ax.set_title(f"{result['model']} {result['params_x']:g}x: Spearman {result['spearman']}")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
