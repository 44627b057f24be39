"""The one platform table (ac_toolchain/platform.py): every (target, bench) pair through what `ac compress`
checks before its run directory exists, the table's rows, and `ac targets`."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from ac_toolchain import config as cfgmod
from ac_toolchain.cli import main
from ac_toolchain.compile import TARGETS
from ac_toolchain.compress import _check_platform
from ac_toolchain.errors import USER_ERRORS
from ac_toolchain.platform import BENCH_DEVICES, PLATFORMS, Platform, resolve_platform, runner_target
from android_bench.devices import DEVICES, get_device

BENCHES = ("auto", "none", "host", "qemu-arm64", "callgrind", "adb:FAKE", "pixel")
AUTO = {"x86": "host", "x86-avx2": "host", "arm64": "qemu-arm64", "android-arm64": "qemu-arm64", "opencl": None}
# what cannot work, and the words of its error: an unknown device name, a phone that is not attached
FAILS = {"pixel": "unknown device 'pixel'", "adb:FAKE": "adb:FAKE is not reachable"}


def _checked(target: str, bench: str, goal: str) -> Platform:
    """What `ac compress lenet5 --preset smoke --target T --bench B [goal]` checks before its run directory."""
    cfg, _ = cfgmod.resolve("lenet5", "smoke", {"run.target": target, "run.bench": bench, goal: 2.0})
    platform = resolve_platform(cfg.run.target, cfg.run.bench)
    _check_platform(cfg, platform)
    return platform


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("bench", BENCHES)
def test_every_target_and_bench_pair_works_or_says_why(target: str, bench: str) -> None:
    if bench in FAILS:
        with pytest.raises(USER_ERRORS, match=FAILS[bench]):
            _checked(target, bench, "search.params_x")
        return
    platform = _checked(target, bench, "search.params_x")
    want = AUTO[target] if bench == "auto" else None if bench == "none" else bench
    assert (platform.target.name, platform.bench) == (target, want)
    assert platform.latency_device == (want or AUTO[target])  # no bench: the target's own device


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_latency_goal_needs_a_device_that_profiles(target: str) -> None:
    if AUTO[target] is None:
        for bench in ("auto", "none"):
            with pytest.raises(USER_ERRORS, match=f"target {target} has none here: use --target x86 or x86-avx2 or "
                               "arm64 or android-arm64, or --bench host or qemu-arm64"):  # fmt: skip
                _checked(target, bench, "search.latency_x")
        return
    platform = _checked(target, "auto", "search.latency_x")
    assert platform.latency_device == AUTO[target]
    with pytest.raises(USER_ERRORS, match="callgrind cannot build latency tables"):
        _checked(target, "callgrind", "search.latency_x")


def test_x86_avx2_benches_and_measures_latency_tables_on_the_host() -> None:
    platform = resolve_platform("x86-avx2", "auto")
    assert (platform.bench, platform.latency_device) == ("host", "host")
    assert resolve_platform("x86-avx2", "none").latency_device == "host"  # no bench: the target's own device


def test_one_row_per_target_and_per_bench_device_kind() -> None:
    assert list(PLATFORMS) == list(TARGETS)  # every target once, in the order `ac targets` lists them
    assert all(row.target is TARGETS[name] for name, row in PLATFORMS.items())  # the row names its own target
    assert set(BENCH_DEVICES) == set(DEVICES)
    assert runner_target(get_device("callgrind")).name == "x86-avx2"  # valgrind runs AVX2, not AVX-512
    assert runner_target(get_device("qemu-arm64")).name == "android-arm64"
    assert all(runner_target(get_device(d)).link == "static" for d in ("host", "qemu-arm64", "callgrind"))


def test_unknown_target_is_an_error_that_lists_the_targets() -> None:
    with pytest.raises(USER_ERRORS, match="unknown target 'riscv'; choose one of: x86, x86-avx2, arm64"):
        resolve_platform("riscv")


def test_ac_targets_prints_the_platform_table() -> None:
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in re.split(r"[│|]", line)[1:-1]] for line in result.output.splitlines()
             if line.lstrip().startswith(("│", "|"))]  # fmt: skip
    what = {c[0]: c[1:] for c in cells if len(c) == 3 and c[0]}  # target → description, cross compiler
    where = {c[0]: c[1:] for c in cells if len(c) == 4}  # target → --bench auto, output check here, latency tables
    assert list(what) == list(where) == list(TARGETS)
    assert what["arm64"][1] == "aarch64-linux-gnu-g++" and what["x86"][1].startswith("-")
    assert where["x86-avx2"] == ["host", "no", "host"] and where["x86"] == ["host", "yes", "host"]
    assert where["android-arm64"] == ["qemu-arm64", "yes", "qemu-arm64"]
    assert where["opencl"] == ["none", "no", "none"]
