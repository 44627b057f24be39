"""The runner's JSON-lines protocol and artifact hashing (android_bench/protocol.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ac_toolchain.errors import DeviceError
from android_bench.device import BenchSettings
from android_bench.protocol import artifact_digest, artifact_hashes, parse_runner_output, runner_command


def lines(*events: dict) -> list[str]:
    return [json.dumps(e) for e in events]


START = {"event": "start", "runner": "ac_runner", "version": 1, "threads": 4, "runs": 3}


def test_runner_command_is_the_documented_command_line() -> None:
    settings = BenchSettings(warmup=5, runs=30, min_seconds=1.5, threads=2, seed=7)
    assert runner_command(settings) == [
        "./runner", "--manifest", "manifest.json", "--warmup", "5", "--runs", "30",
        "--min-seconds", "1.5", "--threads", "2", "--seed", "7",
    ]  # fmt: skip
    assert runner_command(BenchSettings(), manifest="m 2.json")[1:3] == ["--manifest", "m 2.json"]


def test_parse_returns_start_samples_done_and_calls_on_sample_in_order() -> None:
    got: list[float] = []
    out = parse_runner_output(
        [
            "TVM: loading module",  # log noise is skipped
            *lines(START, {"event": "sample", "index": 0, "us": 10.5}),
            "[1, 2]",  # JSON, but not an event
            *lines({"event": "progress", "pct": 50}, {"event": "sample", "index": 1, "us": 12}),
            *lines({"event": "sample", "index": 2, "us": 11.0}, {"event": "done", "runs": 3, "total_us": 33.5}),
        ],
        got.append,
    )
    assert got == [10.5, 12.0, 11.0]
    done = {"event": "done", "runs": 3, "total_us": 33.5}
    assert out == {"start": START, "samples_us": [10.5, 12.0, 11.0], "done": done}


def test_missing_done_says_the_runner_stopped_early_with_the_sample_count() -> None:
    got: list[float] = []
    stream = lines(START, {"event": "sample", "us": 1.0}, {"event": "sample", "us": 2.0})
    with pytest.raises(DeviceError, match=r"stopped early.*after 2 sample"):
        parse_runner_output(stream, got.append)
    assert got == [1.0, 2.0]  # the caller still has them


def test_done_count_must_match_the_samples() -> None:
    with pytest.raises(DeviceError, match="reported 5 runs but printed 1"):
        parse_runner_output(lines({"event": "sample", "us": 1.0}, {"event": "done", "runs": 5}))


@pytest.mark.parametrize("us", ["fast", None, True])
def test_malformed_sample_is_an_error(us: object) -> None:
    with pytest.raises(DeviceError, match="malformed sample"):
        parse_runner_output(lines({"event": "sample", "us": us}, {"event": "done", "runs": 1}))


def make_artifact(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "runner").write_bytes(b"\x7fELF runner")
    (root / "manifest.json").write_text('{"model": "m"}')
    (root / "lib").mkdir()
    (root / "lib" / "params.bin").write_bytes(b"\x00" * 8)
    return root


def test_artifact_hashes_cover_every_file_and_the_digest_follows_content_not_location(tmp_path: Path) -> None:
    a = make_artifact(tmp_path / "a")
    b = make_artifact(tmp_path / "b b")
    ha = artifact_hashes(a)
    assert sorted(ha) == ["lib/params.bin", "manifest.json", "runner"]
    assert ha == artifact_hashes(b) and len(artifact_digest(ha)) == 16
    (b / "lib" / "params.bin").write_bytes(b"\x01" * 8)
    assert artifact_digest(artifact_hashes(b)) != artifact_digest(ha)


def test_artifact_without_runner_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(DeviceError, match="holds no 'runner'"):
        artifact_hashes(tmp_path)
