"""The scaling benchmark at a tiny size: both layouts run under torchrun's launcher and fill the table."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import scaling


def test_both_layouts_are_measured_and_tabulated(tmp_path: Path) -> None:
    doc = scaling.main(["--models", "lenet5", "--images", "128", "--proposals", "2", "--repeats", "1",
                        "--results-dir", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [(r["model"], r["processes"], r["threads"]) for r in rows] == [("lenet5", 1, 2), ("lenet5", 2, 1)]
    for r in rows:
        assert all(r[k] > 0 for k in scaling.METRICS), r
        (run,) = r["runs"]  # one launch: the median is that launch's figure
        assert all(run[k] == r[k] for k in scaling.METRICS) and run["load"] >= 0
    table = (tmp_path / "scaling.md").read_text()
    assert "| lenet5 | dense epoch s |" in table and "| lenet5 | proposals / min |" in table
    one, two = rows
    speed_up = one["dense_epoch_s"] / two["dense_epoch_s"]
    assert f"{speed_up:.2f}x |" in table.split("| lenet5 | dense epoch s |")[1].splitlines()[0]
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert doc["rows"] == rows


def test_each_figure_is_the_median_of_the_launches() -> None:
    launches = ((1, 3.0), (2, 1.0), (1, 9.0), (2, 1.5), (1, 4.0), (2, 0.5))
    runs = [{"model": "m", "processes": p, "threads": 3 - p, "load": 0.0, "dense_epoch_s": d, "admm_epoch_s": 2 * d,
             "proposals_per_min": 60 / d} for p, d in launches]  # fmt: skip
    one, two = scaling.median_rows(runs)
    assert (one["processes"], one["dense_epoch_s"], one["admm_epoch_s"]) == (1, 4.0, 8.0)
    assert one["proposals_per_min"] == 15.0  # the median of the figure itself, not 60 / the median time
    assert (two["processes"], two["dense_epoch_s"], len(two["runs"])) == (2, 1.0, 3)
