"""The frontier benchmark's statistics: paired t-intervals, per-cell summaries, the largest ratio kept, and the
ladder's equal-epoch configs."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from benchmarks import frontier
from benchmarks.peers import chain_epochs


def _row(method: str, seed: int, ratio: float, acc: float, dense: float = 0.97, got: float = 0.0) -> dict[str, Any]:
    return {"model": "m", "seed": seed, "method": method, "asked_params_ratio": ratio, "status": "ok",
            "accuracy": acc, "dense_accuracy": dense, "delta_points": 100 * (acc - dense),
            "params_ratio": got or ratio}  # fmt: skip


def test_paired_interval_is_the_student_t_interval_of_the_differences() -> None:
    a, b = [95.0, 96.0, 97.0], [94.0, 94.0, 94.0]  # differences 1, 2, 3: mean 2, sample sd 1
    got = frontier.paired_interval(a, b)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2), from a table
    assert got["mean"] == pytest.approx(2.0)
    assert got["low"] == pytest.approx(2.0 - half) and got["high"] == pytest.approx(2.0 + half)
    assert got["verdict"] == "not distinguishable"  # 2 - 2.48 < 0


def test_paired_interval_verdicts() -> None:
    assert frontier.paired_interval([3.0, 3.1, 2.9], [1.0, 1.0, 1.0])["verdict"] == "ahead"
    assert frontier.paired_interval([1.0, 1.0, 1.0], [3.0, 3.1, 2.9])["verdict"] == "behind"
    one = frontier.paired_interval([2.0], [1.0])
    assert one["low"] is None and one["mean"] == 1.0


def test_pair_uses_only_the_seeds_both_methods_have() -> None:
    rows = [_row("ours", 0, 20, 0.96), _row("ours", 1, 20, 0.95), _row("tp-global", 1, 20, 0.93)]
    got = frontier.pair(rows, "m", 20, "ours", "tp-global")
    assert got is not None and got["n"] == 1 and got["mean"] == pytest.approx(2.0)


def test_cells_summarise_over_seeds() -> None:
    rows = [_row("ours", s, 20, acc, got=g) for s, acc, g in ((0, 0.95, 18.0), (1, 0.97, 32.0))]
    cell = frontier.cells(rows)[("m", "ours", 20)]
    assert cell["accuracy"]["mean"] == pytest.approx(96.0)
    assert cell["accuracy"]["std"] == pytest.approx(math.sqrt(2.0))  # sample sd of 95, 97
    assert cell["params_ratio"] == pytest.approx(24.0)  # geometric mean of 18 and 32


def test_kept_is_the_largest_ratio_whose_mean_loss_is_within_the_band() -> None:
    rows = [_row("ours", 0, 10, 0.968), _row("ours", 0, 20, 0.962), _row("ours", 0, 40, 0.90)]
    assert frontier.kept(rows, "m", "ours", 0.5) == (10, pytest.approx(10))
    assert frontier.kept(rows, "m", "ours", 1.0) == (20, pytest.approx(20))
    assert frontier.kept(rows, "m", "tp-global", 1.0) is None


def test_every_method_of_our_chain_is_a_valid_config_that_trains_the_presets_epochs() -> None:
    from ac_toolchain import config as cfgmod

    base = cfgmod.resolve("lenet5", "cpu")[0]
    ours = [m for m, rule in frontier.METHODS.items() if rule is not None]
    assert set(frontier.LADDER) | set(frontier.LEVERS) <= set(ours)
    for method in ours:
        rule = frontier.METHODS[method]
        assert rule is not None
        cfg = cfgmod.resolve("lenet5", "cpu", {**rule(base), "search.params_x": 20})[0]
        assert chain_epochs(cfg) == chain_epochs(base), method


def _committed_runs() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(frontier.RESULTS.glob("frontier*.json")):
        rows += [r for r in json.loads(path.read_text())["results"] if r.get("status") == "ok"]
    return rows


def test_paired_purification_never_costs_more_test_accuracy_than_its_tolerance_plus_noise() -> None:
    """On the committed frontier runs: where purification used the paired criterion, test top-1 after it is not
    below test top-1 before it by more than purify.tolerance plus 1.96 binomial standard errors of the test split
    (the tolerance rule, measured in the same runs, is what this guards against)."""
    from ac_toolchain import config as cfgmod
    from ac_toolchain.context import load_splits

    checked, sizes = 0, {}
    for row in _committed_runs():
        over = row.get("overrides", {})
        if not (over.get("purify.enabled") and over.get("purify.criterion") == "paired"):
            continue
        cfg = cfgmod.resolve(row["model"], "cpu", {k: v for k, v in over.items() if k != "model.checkpoint"})[0]
        if (row["model"], row["seed"]) not in sizes:
            sizes[(row["model"], row["seed"])] = len(load_splits(cfg).test)
        n = sizes[(row["model"], row["seed"])]
        stages = {(t["round"], t["stage"]): t["test"] for t in row["rounds"]}
        for (rnd, stage), before in stages.items():
            if stage != "retrained" or (rnd, "purified") not in stages:
                continue
            after = stages[(rnd, "purified")]
            allowed = cfg.purify.tolerance / 100 + 1.96 * math.sqrt(before * (1 - before) / n)
            assert before - after <= allowed, (row["method"], row["seed"], rnd, before, after)
            checked += 1
    assert checked > 0  # the committed results hold such runs
