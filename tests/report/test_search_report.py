"""The report of a run that searched: Pareto front, the three search plots, the Search section and method line.

A fake run directory (search.jsonl + a typed Report) stands in for a real search, so this runs in a second or two.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest

from ac_toolchain.config import CompressConfig
from ac_toolchain.report import render_markdown, write_report
from ac_toolchain.report.plots import (
    pareto_front,
    plot_pareto,
    plot_rates,
    plot_search_trace,
    read_search_log,
)
from ac_toolchain.report.records import (
    CompileRecord,
    LayerRow,
    LayerSetting,
    Measurement,
    Method,
    Report,
    SearchSummary,
    read_report,
)

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _point(ratio: float, accuracy: float) -> dict[str, Any]:
    return {"rates": [0.5] * 3, "schemes": ["filter"] * 3, "accuracy": accuracy, "params": 1000, "flops": 5000,
            "ratio": ratio}  # fmt: skip


def _log() -> list[dict[str, Any]]:
    """Two rounds of four proposals; the first of each is the round's start (always accepted)."""
    rounds = {1: [(6.8, 0.90, True), (7.1, 0.86, False), (7.0, 0.91, True), (7.3, 0.89, True)],
              2: [(49.0, 0.72, True), (50.2, 0.70, True), (50.5, 0.60, False), (51.0, 0.71, True)]}  # fmt: skip
    log = []
    for r, props in rounds.items():
        best = 0.0
        for i, (ratio, acc, accepted) in enumerate(props):
            best = max(best, acc) if accepted else best
            log.append({"round": r, "index": i, "temperature": 10.0 * 0.9**i, "point": _point(ratio, acc),
                        "accepted": accepted, "best_accuracy": best, "spec": {}})  # fmt: skip
    return log


def _summary(r: int, reduction: float, best: tuple[float, float], proposals: int) -> SearchSummary:
    return SearchSummary(r, "params", reduction, proposals, 12.34, 19.45, _point(*best),
                         [{"name": n, "members": [n], "size": 100, "role": "body"} for n in LAYERS])  # fmt: skip


RATES = {"conv1": {"rate": 0.25, "scheme": "filter"}, "conv2": {"rate": 0.8125, "scheme": "filter+column"},
         "fc1": {"rate": 0.9, "scheme": "column"}, "fc2": {"rate": 0.5, "scheme": "filter"}}  # fmt: skip


def _layer(name: str) -> LayerRow:
    return LayerRow(name, RATES[name]["scheme"], RATES[name]["rate"], 3, 6, 10, 20)


def _report(cfg: CompressConfig, **changes: Any) -> Report:
    report = Report(
        model="lenet5", dataset="mnist-mini", target="x86", dense=Measurement(0.95, 61_706, 416_520),
        compressed=Measurement(0.93, 1_234, 20_000), accuracy_drop_points=2.0, ratios={"params": 50.0, "flops": 20.8},
        method=Method.of(cfg), compact_max_abs_diff=0.0, onnx_max_abs_diff=1e-6,
        compile=CompileRecord("x86", {"kind": "llvm"}, "not compiled"), layers=[_layer(n) for n in LAYERS],
        search=[_summary(1, 7.0711, (7.0, 0.91), 3), _summary(2, 50.0, (51.0, 0.71), 3)],
        rates={k: LayerSetting(**v) for k, v in RATES.items()}, timings={"search-r1": 12.3},
    )  # fmt: skip
    return replace(report, **changes)


def _cfg(method: str = "anneal", params_x: float = 50.0, rounds: int = 2) -> CompressConfig:
    cfg = CompressConfig()
    cfg.search.method, cfg.search.params_x, cfg.search.rounds = method, params_x, rounds
    return cfg


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(e) for e in reversed(_log())]  # out of order: the reader sorts by (round, index)
    (run / "search.jsonl").write_text("\n".join(lines) + '\n{"round": 2, "ind')  # a torn last line
    return run


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    pts = [{"ratio": r, "accuracy": a, "id": i} for i, (r, a) in enumerate([
        (1.0, 0.90),  # 0 front: the most accurate
        (2.0, 0.85),  # 1 front
        (2.0, 0.80),  # 2 dominated by 1 (same ratio, less accurate)
        (1.5, 0.85),  # 3 dominated by 1 (same accuracy, less reduction)
        (3.0, 0.70),  # 4 front
        (2.5, 0.60),  # 5 dominated by 4
        (4.0, 0.50),  # 6 front: the most reduced
        (3.0, 0.70),  # 7 the same as 4: kept once
        (0.5, 0.89),  # 8 dominated by 0
    ])]  # fmt: skip
    assert [p["id"] for p in pareto_front(pts)] == [0, 1, 4, 6]
    assert pareto_front([]) == []
    assert pareto_front([{"ratio": 2.0, "accuracy": 0.5}]) == [{"ratio": 2.0, "accuracy": 0.5}]


def test_search_log_is_read_sorted_and_a_torn_line_skipped(tmp_path: Path) -> None:
    log = read_search_log(_fake_run(tmp_path) / "search.jsonl")
    assert [(e["round"], e["index"]) for e in log] == [(r, i) for r in (1, 2) for i in range(4)]
    assert read_search_log(tmp_path / "missing.jsonl") == []


def test_each_plot_is_a_png_and_is_skipped_without_data(tmp_path: Path) -> None:
    log = _log()
    for path in (plot_rates(RATES, tmp_path / "p" / "rates.png"),
                 plot_search_trace(log, tmp_path / "p" / "trace.png"),
                 plot_pareto(log, tmp_path / "p" / "pareto.png", {1: 7.07, 2: 50.0})):  # fmt: skip
        assert path is not None
        _assert_png(path)
    assert plot_rates({}, tmp_path / "a.png") is None
    assert plot_search_trace([], tmp_path / "b.png") is None
    assert plot_pareto([], tmp_path / "c.png") is None
    assert not list(tmp_path.glob("*.png"))


def test_write_report_draws_the_search_plots_and_section(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    report = write_report(run, _report(_cfg()))
    assert report.plots == {"rates": "plots/rates.png", "search_trace": "plots/search_trace.png",
                            "pareto": "plots/pareto.png"}  # fmt: skip
    for rel in report.plots.values():
        _assert_png(run / rel)
    assert report.method.goals == {"params": 50.0} and report.method.rounds == 2
    assert [s.round for s in report.search] == [1, 2]
    assert read_report(run / "report.json") == report  # report.json is the typed report, read back whole

    md = (run / "report.md").read_text()
    assert "Method: `anneal` search to 50× params in 2 rounds, `admm` pruning + purification." in md
    assert "in every layer" not in md  # the uniform rate is not what ran
    section = md[md.index("## Search") : md.index("## Layers")]
    assert ("- round 1: goal 7.0711× params; 3 proposals in 12.3 s (19.45 / minute); best proxy top-1 91.00% "
            "at 7.00× params") in section  # fmt: skip
    assert ("- round 2: goal 50× params; 3 proposals in 12.3 s (19.45 / minute); best proxy top-1 71.00% "
            "at 51.00× params") in section  # fmt: skip
    for rel in report.plots.values():
        assert f"]({rel})" in section
    assert "| layer | scheme | rate |" in section
    assert "| conv2 | filter+column | 0.8125 |" in section and "| fc1 | column | 0.9000 |" in section


def test_search_without_a_log_still_reports_rates_and_section(tmp_path: Path) -> None:
    report = write_report(tmp_path, _report(_cfg()))
    assert report.plots == {"rates": "plots/rates.png"}
    assert "## Search" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("cfg", "rates_file", "want"),
    [
        (_cfg("uniform", 0.0, 1), "", "Method: `filter+column` scheme at rate 0.5 in every layer, `admm` pruning"),
        (_cfg("uniform", 0.0, 1), "r.json", "Method: per-layer targets from `r.json`, `admm` pruning"),
        (_cfg("uniform", 30.0, 1), "", "Method: `uniform` search to 30× params in 1 round, `admm` pruning"),
        (_cfg("anneal", 12.5, 3), "", "Method: `anneal` search to 12.5× params in 3 rounds, `admm` pruning"),
    ],
)
def test_method_line_names_the_search_and_target_or_the_uniform_rate(
    tmp_path: Path, cfg: CompressConfig, rates_file: str, want: str
) -> None:
    cfg.prune.rates = rates_file
    md = render_markdown(_report(cfg, search=[], rates={}))
    assert want in md and "## Search" not in md


def test_an_old_report_without_search_keys_still_renders(tmp_path: Path) -> None:
    """`ac bench` re-renders report.json of runs made before the search: no "search", "goals" or "rounds"."""
    old = asdict(_report(_cfg("uniform", 0.0, 1), search=[], rates={}))
    for key in ("goals", "rounds"):
        del old["method"][key]
    del old["search"]
    (tmp_path / "report.json").write_text(json.dumps(old))
    md = render_markdown(read_report(tmp_path / "report.json"))
    assert "rate 0.5 in every layer" in md and "## Search" not in md


def test_a_report_of_an_admm_run_says_admm_did_not_pay_and_how_to_skip_it() -> None:
    from ac_toolchain.report.render import ADMM_NOTE

    admm, oneshot = _cfg(), _cfg()
    oneshot.prune.method = "oneshot"
    said = render_markdown(_report(admm, search=[], rates={}))
    assert ADMM_NOTE in said and "--prune-method oneshot" in said
    assert ADMM_NOTE not in render_markdown(_report(oneshot, search=[], rates={}))
