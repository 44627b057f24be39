"""Latency tables measured for real on qemu-arm64 (instruction counts of the table runner's marks), into an empty
cell cache: a cell equals a separate qemu run of that one cell, and a tiny model whose kept structure sits on grid
cells (on and off the rest term's fit points) costs, compiled whole, what the tables predict; and `ac bench
--profile-layers` writes the run's tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ac_toolchain import latency_tables
from ac_toolchain.cli import main
from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.cost.latency_model import cells
from ac_toolchain.graph import trace
from ac_toolchain.latency_tables import TABLE_SETTINGS, latency_model, measured_total, table_runner
from ac_toolchain.platform import runner_target
from ac_toolchain.prune.schemes import apply_masks
from ac_toolchain.prune.spec import LayerSpec
from ac_toolchain.search.space import Space
from android_bench.qemu import QemuDevice
from tests.nets import cbr

X = torch.randn(1, 3, 16, 16)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(3, 16), cbr(16, 16), cbr(16, 16, stride=2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Tables measured now: the cell cache is an empty folder of this module's (never an earlier run's cells)."""
    cells_dir = tmp_path_factory.mktemp("cells")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(latency_tables, "cell_cache_dir", lambda: cells_dir)
        yield latency_model(_tiny(), X, "qemu-arm64", tmp_path_factory.mktemp("latency"))
        assert list(cells_dir.glob("qemu-arm64-*.json"))  # measured into this module's cache


# every conv's (filters, input channels, rows) kept is a grid cell ("filters": conv 1 keeps 8 of 16 filters, conv 2
# reads those 8 channels and keeps 18 of their 72 columns, conv 3 keeps 8 filters; "columns": 86 of 144 and 36 of
# 144 columns, densities 0.6 and 0.25)
GRID_SPECS = {
    "filters": {"body.0.0": LayerSpec(0.5, "filter"), "body.1.0": LayerSpec(0.75, "column"),
                "body.2.0": LayerSpec(0.5, "filter")},
    # off the rest term's two fit points (dense, filters at 0.5): a quarter of the filters, half the columns
    "quarter": {"body.0.0": LayerSpec(0.75, "filter"), "body.1.0": LayerSpec(0.5, "column"),
                "body.2.0": LayerSpec(0.75, "filter")},
    "columns": {"body.0.0": LayerSpec(0.0, "filter"), "body.1.0": LayerSpec(0.4, "column"),
                "body.2.0": LayerSpec(0.75, "column")},
}  # fmt: skip


@pytest.mark.parametrize("name", GRID_SPECS)
def test_a_model_on_grid_cells_costs_what_the_tables_predict(name: str, tables: object, tmp_path: Path) -> None:
    model = _tiny()
    space = Space(trace(model, X), "latency", called_modules(model, X), latency=tables)  # type: ignore[arg-type]
    spec = {**{u.name: LayerSpec(0.0, "filter") for u in space.units}, **GRID_SPECS[name]}
    masks = space.masks(spec)
    apply_masks(model, masks)
    device = QemuDevice()
    measured = measured_total(device, model, X, runner_target(device), tmp_path / "pruned")
    predicted = space.cost(spec).latency
    assert abs(predicted - measured) / measured < 5e-3, (predicted, measured)
    assert space.dense.latency == tables.total  # type: ignore[attr-defined]  # the rest is fitted to it


def test_cells_are_the_counts_of_a_separate_qemu_run(tables: object, tmp_path: Path) -> None:
    t = tables.layers["body.1.0"]  # type: ignore[attr-defined]
    device = QemuDevice()
    grid = cells(t.geometry)
    picked = [grid[0], grid[len(grid) // 2], grid[-1]]
    for cell in picked:  # one runner process per cell, no cache: its count is the table's cell
        (tmp_path / "one.txt").write_text(t.geometry.cell_line(*cell) + "\n")
        (count,) = device.profile_cells(table_runner(runner_target(device)), tmp_path / "one.txt", TABLE_SETTINGS)
        # qemu counts of one call move by a few instructions between processes (~0.03 % seen), not more
        assert t.predict(*cell) == pytest.approx(count, rel=2e-3), cell
    assert t.dense() > t.predict(8, 16, 144) > t.predict(8, 8, 72) > 0  # fewer filters, fewer channels: cheaper


def test_profile_layers_writes_the_runs_tables(smoke_run: Path) -> None:
    result = CliRunner().invoke(main, ["bench", str(smoke_run), "--bench", "qemu-arm64", "--profile-layers"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    table = json.loads((smoke_run / "latency" / "qemu-arm64.json").read_text())
    assert table["metric"] == "instructions" and list(table["layers"]) == ["conv1", "conv2"]
    assert "predicted" in said and "speed-up" in said
    assert [table["layers"][n]["geometry"]["c"] for n in ("conv1", "conv2")] == [1, 6]


def test_compress_to_a_latency_target_reports_predicted_beside_measured(tmp_path: Path) -> None:
    from ac_toolchain import compress

    report = compress("lenet5", "smoke", {"run.target": "android-arm64", "run.bench": "qemu-arm64",
                                          "search.latency_x": 1.5, "run.runs_dir": str(tmp_path)})  # fmt: skip
    (run,) = list(tmp_path.iterdir())
    lat, measured = report.latency, report.bench["qemu-arm64"].speedup
    assert lat is not None and lat.device == "qemu-arm64" and lat.predicted_speedup >= 1.5
    assert abs(lat.predicted_speedup - measured) / measured < 0.03, (lat, measured)  # the README: within 3 %
    assert [s.objective for s in report.search] == ["latency", "latency"]
    md = (run / "report.md").read_text()
    assert "## Latency objective" in md and f"{lat.predicted_speedup}×" in md and f"{measured}×" in md
    tables = json.loads((run / "latency" / "qemu-arm64.json").read_text())
    assert list(tables["layers"]) == ["conv1", "conv2"] and tables["total"] == pytest.approx(lat.dense)
