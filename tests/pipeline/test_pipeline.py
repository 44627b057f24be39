"""The one stage list (ac_toolchain/pipeline/__init__.py): what it holds for each kind of run, and that
docs/architecture.md draws exactly it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ac_toolchain import config as cfgmod
from ac_toolchain.pipeline import DIAGRAM, describe, pipeline, until
from ac_toolchain.pipeline.rounds import Dense, RoundStage
from ac_toolchain.platform import resolve_platform

ROOT = Path(__file__).resolve().parents[2]


def _run(bench: str | None = "qemu-arm64", **overrides: Any) -> Any:
    """What pipeline() reads of a run: its config and platform (no data, no run directory)."""
    cfg, _ = cfgmod.resolve("lenet5", "smoke", overrides)
    return SimpleNamespace(cfg=cfg, platform=SimpleNamespace(bench=bench))


def test_the_full_pipeline_is_the_diagram_and_the_doc_draws_it() -> None:
    stages = pipeline(_run(**{"search.latency_x": 2.0, "search.rounds": 3, "quantize.mode": "int8"}))
    assert describe(stages) == DIAGRAM
    assert DIAGRAM in (ROOT / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize(
    ("bench", "overrides", "want"),
    [
        (None, {"search.method": "uniform", "prune.method": "oneshot", "purify.enabled": False},
         "Dense → Evaluate → Round × N [Search → Hard prune + retrain] → Evaluate → Compact → Export → Compile "
         "→ Report"),
        ("host", {"search.params_x": 10.0},
         "Dense → Evaluate → Round × N [Search → ADMM → Hard prune + retrain → Purify] → Evaluate → Compact "
         "→ Export → Compile → Bench → Report"),
    ],
)  # fmt: skip
def test_the_config_switches_stages_off(bench: str | None, overrides: dict[str, Any], want: str) -> None:
    assert describe(pipeline(_run(bench, **overrides))) == want


def test_every_stage_has_its_own_name_and_products_in_the_run_directory(tmp_path: Path) -> None:
    run = _run(**{"search.latency_x": 2.0, "search.rounds": 2, "quantize.mode": "int8"})
    run.dir = tmp_path
    run.platform = resolve_platform("arm64", "qemu-arm64")
    stages = pipeline(run)
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    for stage in stages:
        products = stage.products(run)
        assert products and all(p.is_relative_to(tmp_path) for p in products), stage.name
        assert not stage.done(run)


def test_train_and_prune_run_a_prefix_of_the_one_list() -> None:
    stages = pipeline(_run())
    assert [s.name for s in until(stages, Dense)] == ["dense"]
    rounds = until(stages, RoundStage)
    assert rounds == stages[: len(rounds)] and rounds[-1].name == "purify-r2"
