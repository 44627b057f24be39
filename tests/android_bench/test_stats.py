"""Latency summaries and thermal readings (android_bench/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ac_toolchain.errors import DeviceError
from android_bench.stats import celsius, summarize, thermal_delta, thermal_zones


def test_summary_of_known_values() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s["n"] == 4 and s["min"] == 1.0 and s["median"] == 2.5 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std (ddof=0), not sqrt(5/3)
    # linear interpolation between order statistics: rank 0.05 * 3 = 0.15 → 1.15, rank 2.85 → 3.85
    assert s["p5"] == pytest.approx(1.15) and s["p95"] == pytest.approx(3.85)


def test_percentiles_match_numpy_on_noisy_samples() -> None:
    samples = list(np.random.default_rng(0).lognormal(9.5, 0.1, size=57))
    s = summarize(samples)
    assert s["p5"] == pytest.approx(np.percentile(samples, 5))
    assert s["p95"] == pytest.approx(np.percentile(samples, 95))
    assert s["median"] == pytest.approx(np.median(samples)) and s["std"] == pytest.approx(np.std(samples))
    assert s["min"] <= s["p5"] <= s["median"] <= s["p95"]


def test_one_sample_has_zero_spread() -> None:
    assert summarize([7.5]) == {"n": 1, "min": 7.5, "median": 7.5, "mean": 7.5, "std": 0.0, "p5": 7.5, "p95": 7.5}


def test_no_samples_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="no samples"):
        summarize([])


@pytest.mark.parametrize(
    ("raw", "deg"), [("41250", 41.25), ("38", 38.0), ("1000", 1000.0), ("-5000", -5.0), (" 30100\n", 30.1)]
)
def test_celsius_tells_millidegrees_from_degrees(raw: str, deg: float) -> None:
    assert celsius(raw) == deg


def test_thermal_zones_skip_unreadable_and_keep_repeated_types_apart() -> None:
    rows = [("thermal_zone0", "bms", "30100"), ("thermal_zone1", "bms", "30400"), ("thermal_zone2", "battery", ""),
            ("thermal_zone3", "", "35000"), ("thermal_zone4", "cpu", "n/a")]  # fmt: skip
    assert thermal_zones(rows) == {"bms": 30.1, "bms@thermal_zone1": 30.4, "thermal_zone3": 35.0}


def test_thermal_delta_is_after_minus_before_for_zones_read_both_times() -> None:
    assert thermal_delta({"BIG": 41.25, "TPU": 38.0, "gone": 1.0}, {"BIG": 52.875, "TPU": 37.5, "new": 2.0}) == {
        "BIG": 11.625,
        "TPU": -0.5,
    }
