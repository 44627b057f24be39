"""Building latency tables (ac_toolchain/latency_tables.py) on a fake profiling device: cache hits and misses,
reuse by a second model with the same conv shapes, invalidation when the kernel source changes; and the errors
for devices that cannot be profiled."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ac_toolchain import native
from ac_toolchain.cli import main
from ac_toolchain.compile import get_target
from ac_toolchain.cost.latency_model import cells, conv_geometries
from ac_toolchain.errors import DeviceError
from ac_toolchain.latency_tables import CellCache, check_profilable, kernel_digest, layer_tables
from android_bench.device import BenchSettings, Device
from tests.nets import cbr

TARGET = get_target("android-arm64")


class Profiler(Device):
    """Counts its calls; a cell costs f * k + c (read back from the cells file the runner would get)."""

    name, arch, metric, profiles = "fake-profiler", "aarch64", "instructions", True

    def __init__(self) -> None:
        self.calls: list[int] = []

    def fingerprint(self) -> dict[str, str]:
        return {"soc": "fake"}

    def thermal(self) -> dict[str, float]:
        return {}

    def measure(self, artifact: Path, settings: BenchSettings, on_sample: Callable[[float], None] | None = None
                ) -> dict[str, Any]:  # fmt: skip
        raise AssertionError("not used")

    def profile_cells(self, runner: Path, cells: Path, settings: BenchSettings) -> list[float]:
        lines = [list(map(int, line.split())) for line in cells.read_text().splitlines()]
        self.calls.append(len(lines))
        return [float(v[3] * v[4] + v[0]) for v in lines]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _geos(width: int) -> dict[str, Any]:
    model = nn.Sequential(cbr(3, width), cbr(width, width), cbr(width, width))  # two convs share one shape
    return conv_geometries(model, torch.randn(1, 3, 8, 8))


def test_cells_are_measured_once_then_read_from_the_cache(cache_dir: Path) -> None:
    device, geos = Profiler(), _geos(16)
    unique = len(set(cells(geos["0.0"]))) + len(set(cells(geos["1.0"])))
    first = CellCache(device, TARGET, 0)
    tables = layer_tables(device, geos, first, Path("unused"))
    assert first.misses == unique and sum(device.calls) == unique and len(device.calls) == 2  # one run per shape
    assert tables["2.0"].values == tables["1.0"].values  # the repeated shape was measured once
    assert tables["1.0"].dense() == 16 * 16 * 9 + 16
    again = CellCache(device, TARGET, 0)  # a new process: read back from the file
    assert again.path == first.path and again.path.is_file()
    layer_tables(device, geos, again, Path("unused"))
    assert again.misses == 0 and again.hits == len(set(cells(geos["0.0"]))) + 2 * len(set(cells(geos["1.0"])))
    assert len(device.calls) == 2  # nothing measured


def test_a_second_model_with_the_same_shapes_measures_only_what_is_new(cache_dir: Path) -> None:
    device = Profiler()
    layer_tables(device, _geos(16), CellCache(device, TARGET, 0), Path("unused"))
    model = nn.Sequential(cbr(3, 16), cbr(16, 16), cbr(16, 8))  # the last conv is a new shape
    cache = CellCache(device, TARGET, 0)
    geos = conv_geometries(model, torch.randn(1, 3, 8, 8))
    layer_tables(device, geos, cache, Path("unused"))
    assert cache.misses == len(set(cells(geos["2.0"]))) and device.calls[-1] == cache.misses


def test_an_edited_kernel_source_starts_a_new_cache(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:  # fmt: skip
    device = Profiler()
    before = CellCache(device, TARGET, 0)
    layer_tables(device, _geos(16), before, Path("unused"))
    kernels, runner = tmp_path / "kernels", tmp_path / "android_bench" / "runner"  # the sources, in the same order
    shutil.copytree(native.KERNELS, kernels)
    shutil.copytree(native.RUNNER, runner)
    monkeypatch.setattr(native, "KERNELS", kernels)
    monkeypatch.setattr(native, "RUNNER", runner)
    assert kernel_digest(TARGET) == before.identity["kernel"]  # a copy is the same source
    source = kernels / "src" / "compact_conv.cc"
    source.write_text(source.read_text() + "\n// edited\n")
    after = CellCache(device, TARGET, 0)
    assert after.path != before.path and not after.values
    layer_tables(device, _geos(16), after, Path("unused"))
    assert after.misses == before.misses  # everything measured again


def test_the_cache_key_holds_device_threads_and_metric(cache_dir: Path) -> None:
    device = Profiler()
    paths = {CellCache(device, TARGET, 0).path, CellCache(device, TARGET, 2).path,
             CellCache(device, get_target("x86"), 0).path}  # fmt: skip
    assert len(paths) == 3


def test_a_device_without_per_call_measurement_cannot_be_profiled() -> None:
    with pytest.raises(DeviceError, match="callgrind cannot build latency tables .* profile on host .* or qemu-arm64"):
        check_profilable("callgrind")


def _ac(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def test_compress_refuses_a_latency_target_it_cannot_measure_before_any_run_directory(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, said = _ac("compress", "lenet5", "--preset", "smoke", "--latency-x", "2", "--target", "x86",
                     "--bench", "callgrind", "--runs-dir", str(runs))  # fmt: skip
    assert code == 2 and "callgrind cannot build latency tables" in said
    code, said = _ac("compress", "lenet5", "--preset", "smoke", "--latency-x", "2", "--target", "opencl",
                     "--runs-dir", str(runs))  # fmt: skip
    assert code == 2 and "--latency-x needs a device to measure on; target opencl has none" in said
    code, said = _ac("compress", "mobilenetv2", "--preset", "smoke", "--latency-x", "2", "--target", "x86",
                     "--runs-dir", str(runs))  # fmt: skip
    assert code == 2 and "needs every conv on the compact kernel" in said
    code, said = _ac("compress", "lenet5", "--preset", "smoke", "--latency-x", "2", "--params-x", "3",
                     "--runs-dir", str(runs))  # fmt: skip
    assert code == 2 and "set one reduction goal" in said
    assert not runs.exists()
