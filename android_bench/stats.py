"""The numbers a bench reports: latency summaries (benchmark_model / benchncnn style) and thermal readings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from android_bench.errors import DeviceError


def summarize(samples_us: Sequence[float]) -> dict[str, float]:
    """n, min, median, mean, std, p5, p95 of latency samples, all in microseconds.

    std is the *population* standard deviation (numpy's default, ddof=0), as TFLite's benchmark_model reports;
    percentiles interpolate linearly between samples (numpy's default method).
    """
    if len(samples_us) == 0:
        raise DeviceError("no samples to summarize: the runner printed no timed run")
    a = np.asarray(samples_us, dtype=np.float64)
    p5, median, p95 = np.percentile(a, [5, 50, 95])
    return {
        "n": len(a),
        "min": float(a.min()),
        "median": float(median),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "p5": float(p5),
        "p95": float(p95),
    }


def celsius(raw: str) -> float:
    """A thermal zone's `temp` in °C: kernels report millidegrees, a few old ones whole degrees.

    No phone runs at 1000 °C, so any magnitude above 1000 is taken as millidegrees. Raises ValueError on junk.
    """
    value = float(raw.strip())
    return value / 1000.0 if abs(value) > 1000 else value


def thermal_zones(rows: Iterable[tuple[str, str, str]]) -> dict[str, float]:
    """(zone, type, raw temp) rows → {type: °C}; unreadable zones are skipped, a repeated type keeps its zone."""
    temps: dict[str, float] = {}
    for zone, kind, raw in rows:
        try:
            value = celsius(raw)
        except ValueError:
            continue
        key = kind or zone
        temps[f"{key}@{zone}" if key in temps else key] = value
    return temps


def thermal_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """after − before (°C) for every zone read both times: how much a run heated the device."""
    return {zone: round(after[zone] - before[zone], 3) for zone in before if zone in after}
