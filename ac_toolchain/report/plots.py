"""Plots of a run, saved as PNGs under ``<run>/plots/`` and shown in report.md."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from ac_toolchain.scheme_registry import REGISTRY


def plot_admm(admm: list[dict[str, Any]], out: Path) -> Path | None:
    """Per-layer primal residual ||W - Z|| / ||W|| over the ADMM iterations (log scale), rho on a twin axis."""
    if not admm:
        return None
    its = [e["iteration"] for e in admm]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for layer in admm[0]["residual"]:
        ax.plot(its, [max(e["residual"][layer], 1e-12) for e in admm], color="#47a", alpha=0.35, lw=1)
    ax.plot(its, [e["max_residual"] for e in admm], color="#a33", lw=2, label="largest layer residual")
    ax.set_yscale("log")
    ax.set_xlabel("ADMM iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("||W - Z|| / ||W|| per layer")
    rho = ax.twinx()
    rho.plot(its, [e["rho"] for e in admm], "k--", lw=1, label="rho")
    rho.set_yscale("log")
    rho.set_ylabel("rho (dashed)")
    ax.legend(loc="lower left")
    ax.set_title("ADMM: primal residual per layer as rho rises")
    return _save(fig, out)



P = TypeVar("P", bound=Mapping[str, Any])


def _colour(scheme: str) -> str:
    entry = REGISTRY.get(scheme)
    return entry.colour if entry else "#888"


def read_search_log(path: Path) -> list[dict[str, Any]]:
    """The proposals of ``search.jsonl`` sorted by (round, index); [] when absent. A torn last line is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # blank, or cut short by a kill mid-write
            continue
    return sorted((e for e in entries if isinstance(e, dict) and "point" in e),
                  key=lambda e: (e.get("round", 0), e.get("index", 0)))  # fmt: skip


def pareto_front(points: Iterable[P]) -> list[P]:
    """The non-dominated points (no other has both ``ratio`` and ``accuracy`` >= and one of them >), by ratio
    ascending (so accuracy descending); a point repeated exactly is kept once."""
    front: list[P] = []
    for p in sorted(points, key=lambda p: (-p["ratio"], -p["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front[::-1]


def _save(fig: Figure, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_rates(rates: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """The final per-layer rate (fraction of structures removed), one bar per layer, coloured by scheme."""
    if not rates:
        return None
    names = list(rates)
    schemes = [rates[n]["scheme"] for n in names]
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 2 + 0.3 * len(names))), 4.5))
    ax.bar(range(len(names)), [rates[n]["rate"] for n in names],
           color=[_colour(s) for s in schemes])  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate (fraction of structures removed)")
    ax.legend(handles=[Patch(color=_colour(s), label=s) for s in dict.fromkeys(schemes)],
              title="scheme", loc="upper left", bbox_to_anchor=(1.01, 1))  # fmt: skip
    ax.set_title("Final per-layer rates and schemes")
    return _save(fig, out)


def plot_search_trace(log: list[dict[str, Any]], out: Path) -> Path | None:
    """Proxy accuracy of every proposal (accepted / rejected), the round's best so far, and the temperature
    (log, twin axis) over the proposal number; dotted vertical lines start each round after the first."""
    if not log:
        return None
    xs = list(range(len(log)))
    acc = [e["point"]["accuracy"] for e in log]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for accepted, marker, colour in ((True, "o", "#47a"), (False, "x", "#999")):
        picked = [i for i in xs if bool(log[i].get("accepted")) is accepted]
        ax.scatter(picked, [acc[i] for i in picked], s=18, marker=marker, color=colour, zorder=3,
                   label="accepted" if accepted else "rejected")  # fmt: skip
    temp = ax.twinx()
    rounds = [e.get("round", 0) for e in log]
    starts = [i for i in xs if i == 0 or rounds[i] != rounds[i - 1]]
    for k, start in enumerate(starts):
        seg = xs[start : starts[k + 1] if k + 1 < len(starts) else len(xs)]
        ax.plot(seg, [log[i]["best_accuracy"] for i in seg], color="#a33", lw=2,
                label="best so far" if k == 0 else None)  # fmt: skip
        temp.plot(seg, [max(log[i]["temperature"], 1e-12) for i in seg], "k--", lw=1)
        if k:
            ax.axvline(start - 0.5, color="k", ls=":", lw=1)
        ax.annotate(f"round {rounds[start]}", (start, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, 2), textcoords="offset points", fontsize=8)  # fmt: skip
    ax.set_xlabel("proposal")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("proxy top-1 accuracy")
    temp.set_yscale("log")
    temp.set_ylabel("temperature (dashed)")
    ax.legend(loc="lower left")
    ax.set_title("Search: proxy accuracy of each proposal as the temperature falls", pad=14)
    return _save(fig, out)


def plot_pareto(log: list[dict[str, Any]], out: Path, targets: Mapping[int, float] | None = None) -> Path | None:
    """Proxy accuracy vs reduction of every proposal, one colour per round, with each round's Pareto front as a
    step line and its target reduction (``targets``: round -> reduction) as a dotted vertical line."""
    if not log:
        return None
    by_round: dict[int, list[dict[str, Any]]] = {}
    for e in log:
        by_round.setdefault(e.get("round", 0), []).append(e["point"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (r, points) in enumerate(by_round.items()):
        colour = f"C{k % 10}"
        ax.scatter([p["ratio"] for p in points], [p["accuracy"] for p in points], s=14, color=colour, alpha=0.45,
                   label=f"round {r}")  # fmt: skip
        front = pareto_front(points)
        ax.step([p["ratio"] for p in front], [p["accuracy"] for p in front], where="pre", color=colour, lw=2)
        if targets and r in targets:
            ax.axvline(targets[r], color=colour, ls=":", lw=1)
    ratios = [p["ratio"] for points in by_round.values() for p in points]
    if min(ratios) > 0 and max(ratios) > 3 * min(ratios):  # rounds far apart (round r aims at reduction^(r/R))
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    ax.set_xlabel("reduction of the round's objective (dense / compressed)")
    ax.set_ylabel("proxy top-1 accuracy")
    ax.legend(loc="lower left")
    ax.set_title("Search: proposals and Pareto front per round (dotted: round target)")
    return _save(fig, out)


def plot_int8(variants: Mapping[str, Mapping[str, Any]], out: Path) -> Path | None:
    """Model file size (log) vs test top-1 of the Quantize stage's models, int8 filled, fp32 hollow."""
    if not variants:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in variants.items():
        colour = "#47a" if name.startswith("compact") else "#a33"
        filled = name.endswith("int8")
        ax.scatter(v["bytes"], 100 * v["top1"], s=80, edgecolors=colour, facecolors=colour if filled else "none")
        ax.annotate(name, (v["bytes"], 100 * v["top1"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g} kB"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel("ONNX file size (log)")
    ax.set_ylabel("test top-1 (%), onnxruntime")
    ax.set_title("Size vs accuracy: dense and compact, fp32 (hollow) and int8 (filled)")
    return _save(fig, out)
