"""A finished smoke run (LeNet-5, filter+column, android-arm64) shared by the runner, qemu and gate tests."""

from pathlib import Path

import pytest

import ac_toolchain as ac

# what the committed baseline measures: one uniform rate per round (the kept counts do not hang on a search)
SMOKE = {"run.target": "android-arm64", "prune.scheme": "filter+column", "search.method": "uniform"}
BENCHED = {**SMOKE, "run.bench": "qemu-arm64"}  # and the compress chain's own bench stage


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    ac.compress("lenet5", "smoke", {**BENCHED, "run.runs_dir": str(runs)})
    (run,) = list(runs.iterdir())
    return run
