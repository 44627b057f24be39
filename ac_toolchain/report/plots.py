"""Plots of a run, saved as PNGs under ``<run>/plots/`` and shown in report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


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
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
