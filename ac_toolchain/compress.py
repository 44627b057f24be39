"""``ac compress``: open the run (every check before the run directory exists), then run the pipeline
(ac_toolchain/pipeline/). Every product is written into the run directory as soon as it exists, so a failure
later never loses what was made before, and ``--resume`` skips every stage whose products are there (a half-done
training stage continues from its newest checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ac_toolchain import config as cfgmod
from ac_toolchain.config import CompressConfig
from ac_toolchain.context import open_run
from ac_toolchain.latency_tables import check_profilable
from ac_toolchain.pipeline import new_state, pipeline, run_stages
from ac_toolchain.platform import Platform
from ac_toolchain.report.records import Report
from ac_toolchain.train import check_device_options, pick_device


def _check_platform(cfg: CompressConfig, platform: Platform) -> None:
    """Before anything trains: the toolchain of the target, the device a latency goal measures on, and the
    CUDA-only training options."""
    check_device_options(cfg.train, pick_device(cfg.run.device))
    platform.check(cfg.run.tune_trials)
    if "latency" in cfgmod.goals(cfg.search):
        check_profilable(platform.require_latency_device())


def compress(
    model: str | CompressConfig,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> Report:
    """Run the whole chain; returns the typed report (also written to report.json / report.md).

    ``model`` is a resolved config, or a zoo name / recipe path / ``file.py:Builder`` resolved with
    ``preset`` and ``overrides`` (``{"search.params_x": 20}``).
    """
    cfg = model if isinstance(model, CompressConfig) else cfgmod.resolve(model, preset, overrides)[0]
    run = open_run(cfg, run_dir, (_check_platform,), after_model=(cfgmod.check_search,))
    state = run_stages(run, pipeline(run), new_state(run))
    assert state.report is not None  # the last stage is the Report
    return state.report
