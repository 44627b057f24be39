"""Bench the artifacts of a run on one device and write `<run>/bench/<device>.json`; compare with a baseline.

The JSON is rewritten atomically, and also when a variant fails part-way: a phone unplugged after 30 of 50
samples leaves a file with those 30 samples and `"status": "failed: ..."` (fields: android_bench/README.md).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from android_bench.device import BenchSettings, Device
from android_bench.errors import DeviceError
from android_bench.lock import DeviceLock
from android_bench.protocol import artifact_hashes
from android_bench.stats import summarize, thermal_delta

COOLDOWN_PREFIXES = ("adb:",)  # phones throttle when hot; host and qemu need no rest between variants


@dataclass(frozen=True)
class Metric:
    value: Callable[[dict[str, Any]], float | None]  # a variant's entry → the number the gate and speed-up use
    unit: str
    fmt: str


METRICS = {
    "latency_us": Metric(lambda v: (v.get("stats") or {}).get("median"), "µs (median)", ",.1f"),
    "instructions": Metric(lambda v: v.get("instructions"), "instructions", ",.0f"),
}


def bench(
    device: Device,
    artifacts: dict[str, Path],
    settings: BenchSettings,
    out_json: Path,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Measure each artifact in order (e.g. {"dense": ..., "compressed": ...}) holding the device's lock."""
    with DeviceLock(device.name):
        result: dict[str, Any] = {
            "device": device.name,
            "metric": device.metric,
            "fingerprint": device.fingerprint(),
            "settings": asdict(settings),
            "variants": {},
            "speedup": None,
            "status": "running",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            for i, (variant, artifact) in enumerate(artifacts.items()):
                if i and device.name.startswith(COOLDOWN_PREFIXES):
                    sleep(settings.cooldown_s)
                result["variants"][variant] = entry = {"artifact": str(artifact)}
                _measure_variant(device, artifact, settings, entry)
        except DeviceError as exc:
            k = _save_partial(result, out_json, exc)
            raise DeviceError(f"{exc}; the {k} samples so far are saved in {out_json}") from exc
        except BaseException as exc:  # Ctrl-C, a bug: keep what was measured, let the error through unchanged
            _save_partial(result, out_json, exc)
            raise
        result["speedup"] = speedup(result)
        result["status"] = "ok"
        write_json(out_json, result)
    return result


def _measure_variant(device: Device, artifact: Path, settings: BenchSettings, entry: dict[str, Any]) -> None:
    """Fill `entry` in place, so whatever was measured before a failure is still there to save."""
    manifest = artifact_hashes(artifact).get("manifest.json")
    entry.update({"manifest_sha256": manifest, "thermal_before": device.thermal(), "samples_us": []})
    measured = device.measure(artifact, settings, entry["samples_us"].append)
    entry.update({k: v for k, v in measured.items() if k != "metric"})
    entry["thermal_after"] = device.thermal()
    entry["thermal_delta"] = thermal_delta(entry["thermal_before"], entry["thermal_after"])
    if measured["metric"] == "latency_us":
        entry["stats"] = summarize(entry["samples_us"])
    else:
        del entry["samples_us"]  # counts, not timings


def _save_partial(result: dict[str, Any], out_json: Path, exc: BaseException) -> int:
    """Write what was measured before `exc`; returns how many samples the interrupted variant got."""
    result["status"] = f"failed: {str(exc) or type(exc).__name__}"
    for entry in result["variants"].values():
        if entry.get("samples_us") and "stats" not in entry:
            entry["stats"] = summarize(entry["samples_us"])
    write_json(out_json, result)
    current = list(result["variants"].values())[-1] if result["variants"] else {}
    return len(current.get("samples_us", []))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Temp file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def value_of(result: dict[str, Any], variant: str) -> float | None:
    """The number compared for `variant`: median latency (µs) or instruction count; None if not measured."""
    entry = result["variants"].get(variant)
    return METRICS[result["metric"]].value(entry) if entry else None


def speedup(result: dict[str, Any]) -> float | None:
    """dense / compressed (of the median latency, or of the instruction count)."""
    dense, compressed = value_of(result, "dense"), value_of(result, "compressed")
    return round(dense / compressed, 4) if dense and compressed else None


def speedup_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per variant with its value and its speed-up over dense."""
    metric = METRICS[result["metric"]]
    dense = value_of(result, "dense")
    rows = ["| variant | value | unit | speed-up vs dense |", "|---|---:|---|---:|"]
    for name in result["variants"]:
        value = value_of(result, name)
        shown = format(value, metric.fmt) if value is not None else "—"
        ratio = f"{dense / value:.2f}×" if dense and value else "—"
        rows.append(f"| {name} | {shown} | {metric.unit} | {ratio} |")
    return "\n".join(rows)


def baseline_from(result: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a later `ac bench --check` compares against: metric, device and each variant's value, and `history`.

    `history` lists every baseline saved at this path, oldest first, the new one last (`history_entry`):
    `previous` (the baseline this one replaces) passes on its own history, plus its figures when that history
    lacks them (a file from before histories were kept; its date is then unknown, null); its `made_with` note
    is kept too.
    """
    if result.get("status") != "ok":
        raise DeviceError(f"cannot make a baseline from a bench that did not finish ({result.get('status')})")
    variants = {
        name: {"value": value_of(result, name), "manifest_sha256": entry.get("manifest_sha256")}
        for name, entry in result["variants"].items()
    }
    baseline: dict[str, Any] = {"device": result["device"], "metric": result["metric"], "variants": variants}
    history: list[dict[str, Any]] = []
    if previous is not None:
        history = list(previous.get("history", []))
        old = history_entry(previous, None)
        if not history or history[-1]["values"] != old["values"]:
            history.append(old)
        if "made_with" in previous:
            baseline["made_with"] = previous["made_with"]
    baseline["history"] = [*history, history_entry(baseline, result.get("created"))]
    return baseline


def history_entry(baseline: dict[str, Any], date: str | None) -> dict[str, Any]:
    """One line of a baseline's `history`: when, each variant's value, and dense / compressed."""
    values = {name: v["value"] for name, v in baseline["variants"].items()}
    dense, compressed = values.get("dense"), values.get("compressed")
    return {"date": date, "values": values,
            "speedup": round(dense / compressed, 4) if dense and compressed else None}  # fmt: skip


def check_gate(result: dict[str, Any], baseline: dict[str, Any], tolerance: float) -> list[str]:
    """Why `result` fails the gate (empty: it passes): any variant above baseline × (1 + tolerance)."""
    if result.get("status") != "ok":
        return [f"the bench did not finish ({result.get('status')})"]
    if result["metric"] != baseline["metric"] or result["device"] != baseline["device"]:
        return [
            f"the baseline was measured as {baseline['metric']} on {baseline['device']}, this bench as "
            f"{result['metric']} on {result['device']}: they cannot be compared; bench on the same device"
        ]
    metric, failures = METRICS[result["metric"]], []
    for name, base in baseline["variants"].items():
        value, limit = value_of(result, name), base["value"] * (1 + tolerance)
        if value is None:
            failures.append(f"{name}: in the baseline but not measured now")
        elif value > limit:
            failures.append(
                f"{name}: {value:{metric.fmt}} {metric.unit} is {value / base['value'] - 1:+.2%} over the baseline "
                f"{base['value']:{metric.fmt}} (tolerance {tolerance:.2%})"
            )
    return failures
