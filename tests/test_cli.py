"""The CLI: help with examples, the smoke chain end to end, resume, and one clear error per bad input."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from ac_toolchain.cli import main

COMMANDS = ["compress", "train", "eval", "count", "prune", "compact", "export", "compile", "bench", "targets",
            "quantize"]


def _ac(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_every_help_shows_an_example(command: list[str]) -> None:
    result = _ac(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "ac " in result.output.split("Example")[1]


def test_config_flags_are_listed_with_their_recipe_key() -> None:
    out = _ac("compress", "--help").output
    assert "--train-epochs" in out and "[train.epochs;" in out and "--prune-rate" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compress", "alexnet"], "unknown model 'alexnet'"),
        (["compress", "lenet5", "--prune-rate", "1.5"], "prune.rate = 1.5 is out of range"),
        (["compress", "lenet5", "--target", "riscv"], "unknown target 'riscv'"),
        (["compress", "lenet5", "--preset", "huge"], "unknown preset 'huge'"),
        (["compress", "lenet5", "--data", "cifar10"], "cifar10:PATH"),
        (["compress", "lenet5", "--data", "mnist:/nonexistent/folder"], "/nonexistent/folder"),
        (["compress", "lenet5", "--dense", "/nonexistent/dense.pt"], "/nonexistent/dense.pt"),
        (["compress"], "give a MODEL"),
        (["eval", "/nonexistent/x.pt"], "no config.toml beside it"),
        (["compress", "resnet19"], "unknown model 'resnet19'"),
        (["compress", "lenet5", "--prune-rates", "/nonexistent/rates.json", "--search", "uniform"],
         "rates file /nonexistent/rates.json"),
        (["compress", "lenet5", "--params-x", "20", "--flops-x", "5"], "set one reduction goal"),
        (["compress", "lenet5", "--params-x", "0.5"], "a reduction is >= 1"),
        (["compress", "lenet5", "--params-x", "5000"], "a 5000x params reduction cannot be met"),
        (["compress", "lenet5", "--search", "anneal", "--prune-rate", "0.5"], "--search anneal needs a reduction goal"),
        (["compress", "lenet5", "--params-x", "9", "--prune-rate", "0.5"], "give one"),
        (["compress", "lenet5", "--search-energy", "kelvin"], "search.energy = 'kelvin' is not one of"),
        (["compress", "resnet18", "--preset", "paper"], "cifar10:PATH"),
        (["compress", "lenet5", "--purify-enabled", "maybe"], "purify.enabled = 'maybe' is not a valid bool"),
        (["compress", "lenet5", "--prune-method", "nni"], "prune.method = 'nni' is not one of: admm, oneshot"),
        (["compress", "lenet5", "--prune-rates", "r.json", "--prune-rate", "0.5"], "sets every layer's rate"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], needle: str, tmp_path: Path) -> None:
    result = _ac(*args, "--runs-dir", str(tmp_path)) if args[0] == "compress" and len(args) > 1 else _ac(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and needle in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # caught before a run directory was made


def test_bad_rates_file_and_untraceable_model_stop_before_any_run_directory(tmp_path: Path) -> None:
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"conv1": {"rate": 0.5, "scheme": "filter"}, "conv7": {"rate": 0.5}}))
    result = _ac("compress", "lenet5", "--prune-rates", str(rates), "--search", "uniform",
                 "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert result.exit_code == 2 and "unknown layer(s) ['conv7']" in result.output
    rates.write_text(json.dumps({"conv1": {"rate": 0.5}}))
    result = _ac("compress", "lenet5", "--prune-rates", str(rates), "--search", "anneal",
                 "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert result.exit_code == 2 and "add --search uniform to use the file" in result.output  # the search picks rates
    src = tmp_path / "branchy.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes, in_channels):\n"
        "        super().__init__()\n"
        "        self.conv, self.fc = nn.Conv2d(in_channels, 4, 3), nn.Linear(4, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        x = self.conv(x)\n"
        "        return self.fc(x.mean([2, 3])) if x.sum() > 0 else self.fc(x.amax([2, 3]))\n"
    )
    result = _ac("compress", f"{src}:Net", "--input-shape", "1,1,8,8", "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "torch.fx cannot trace Net" in result.output, result.output
    assert not (tmp_path / "runs").exists()  # no dense training first, no run directory left behind


def test_count_prints_the_reference_param_count() -> None:
    result = _ac("count", "resnet18", "--input-shape", "1,3,32,32")
    assert result.exit_code == 0 and "11,173,962" in result.output


def _only_run(runs_dir: Path) -> Path:
    (run,) = list(runs_dir.iterdir())
    return run


# The smoke chain's compressed model must be well above chance: 10 classes (chance 0.1), 500 test images (the
# binomial std at chance is 1.3 points, so 0.25 is > 10 std above it); the smoke chain's 30x model, trained for a
# handful of epochs, sits near 0.4. A chain that breaks the weights lands at chance (the test below shows it).
ACCURACY_FLOOR = 0.25

SMOKE = ["compress", "lenet5", "--preset", "smoke", "--admm-iterations", "6", "--search-proposals", "4",
         "--prune-finetune-epochs", "2", "--target", "arm64"]  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted smoke chain, shared: the report test reads it, the SIGKILL test compares against it."""
    runs = tmp_path_factory.mktemp("smoke")
    result = _ac(*SMOKE, "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    return _only_run(runs)


def test_smoke_chain_writes_a_complete_report(smoke_run: Path) -> None:
    run = smoke_run
    report = json.loads((run / "report.json").read_text())
    assert {
        "model",
        "dataset",
        "target",
        "dense",
        "compressed",
        "ratios",
        "layers",
        "artifacts",
        "timings",
    } <= set(report)
    assert report["model"] == "lenet5" and report["dataset"] == "mnist-mini" and report["target"] == "arm64"
    for key in ("dense", "compressed"):
        assert set(report[key]) == {"accuracy", "params", "flops"}
    assert report["dense"]["params"] == 61_706
    assert report["dense"]["accuracy"] > 0.5  # two epochs of LeNet-5 on MNIST: far above chance (0.1)
    training = report["dense_training"]  # the smoke preset's 2 epochs, within train.patience: both trained
    assert training["loaded"] is None and (training["epochs"], training["max_epochs"]) == (2, 2)
    assert training["best_epoch"] in (1, 2) and training["val_accuracy"] > 0.5
    assert f"trained 2 of 2 epochs; last new best at epoch {training['best_epoch']}" in (run / "report.md").read_text()
    assert report["compressed"]["accuracy"] > ACCURACY_FLOOR, report["compressed"]
    assert report["compressed"]["params"] < report["dense"]["params"] / 1.5
    assert report["ratios"]["params"] == round(report["dense"]["params"] / report["compressed"]["params"], 3)
    assert [x["name"] for x in report["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert {x["name"]: {"rate": x["rate"], "scheme": x["scheme"]} for x in report["layers"]} == report["rates"]
    assert json.loads((run / "rounds" / "2" / "rates.json").read_text()) == report["rates"]  # the last round's spec

    # the search: two rounds of the start + 4 proposals, each proposal meeting its round's target x^(r/2)
    assert [(s["round"], s["proposals"]) for s in report["search"]] == [(1, 4), (2, 4)]
    lines = [json.loads(x) for x in (run / "search.jsonl").read_text().splitlines()]
    assert [(x["round"], x["index"]) for x in lines] == [(r, i) for r in (1, 2) for i in range(5)]
    final = report["config"]["search"]["params_x"]
    assert all(x["point"]["ratio"] >= final ** (x["round"] / 2) for x in lines)
    assert report["ratios"]["params"] >= final  # purification only removes more
    for r in (1, 2):
        best = max((x for x in lines if x["round"] == r), key=lambda x: x["point"]["accuracy"])
        assert json.loads((run / "rounds" / str(r) / "rates.json").read_text()) == best["spec"]

    assert [e["iteration"] for e in report["admm"]] == [1, 2, 3, 4, 5, 6] and all(e["residual"] for e in report["admm"])
    assert report["method"]["prune"] == "admm" and {"dead", "redundant"} <= set(report["purification"])
    assert all(x["residual"] is not None and set(x["purified"]) == {"dead", "redundant"} for x in report["layers"])
    assert (run / report["plots"]["admm"]).is_file() and "![ADMM residuals]" in (run / "report.md").read_text()
    first = torch.load(run / "rounds" / "1" / "purified.pt", weights_only=True)["masks"]
    masks = torch.load(run / "rounds" / "2" / "masks.pt", weights_only=True)["masks"]
    assert all(masks[k][m == 0].abs().max() == 0 for k, m in first.items())  # round 2 keeps round 1's pruning
    for r in ("1", "2"):  # retraining and purification never revive a hard-pruned weight
        hard = torch.load(run / "rounds" / r / "masks.pt", weights_only=True)["masks"]
        for name in ("retrained.pt", "purified.pt"):
            state = torch.load(run / "rounds" / r / name, weights_only=True)
            state = state.get("model", state)
            assert all(state[k][m == 0].abs().max() == 0 for k, m in hard.items()), (r, name)
    compressed = torch.load(run / "compressed.pt", weights_only=True)
    assert sum(int(v.count_nonzero()) for k, v in compressed.items() if k in masks) < sum(
        int(m.sum()) for m in masks.values()
    )  # purification removed more on top of the hard-pruned masks
    assert report["onnx_max_abs_diff"] <= 1e-4
    assert "compiled with TVM for arm64" in report["compile"]["status"]
    assert (run / "arm64" / "model.so").read_bytes()[18] == 183  # ELF e_machine: AArch64
    assert json.loads((run / "arm64" / "manifest.json").read_text())["target"] == "arm64"
    assert all(Path(p).exists() for p in report["artifacts"].values())
    assert "| dense |" in (run / "report.md").read_text()

    # distillation from the dense model (on in the smoke preset, as is the proxy's fine-tune): its cost by stage
    assert report["config"]["distill"]["enabled"] and report["config"]["search"]["proxy_steps"] == 2
    assert {k: v["epochs"] for k, v in report["distill"].items()} == {"admm-r1": 6, "retrain-r1": 2, "admm-r2": 6,
                                                                       "retrain-r2": 2}  # fmt: skip
    assert all(c["teacher_seconds"] > 0 for c in report["distill"].values())
    assert "teacher forward passes (distillation)" in (run / "report.md").read_text()

    # the checkpoint is evaluated again from the run directory, to the same accuracy
    again = _ac("eval", str(run / "compressed.pt"))
    assert again.exit_code == 0
    assert f'"accuracy": {report["compressed"]["accuracy"]}' in again.output


def _kill_when(proc: subprocess.Popen[bytes], runs_dir: Path, pattern: str, timeout: float = 300) -> Path:
    """SIGKILL ``proc`` as soon as a file matching ``runs_dir/*/pattern`` exists; returns that run directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        hits = list(runs_dir.glob(f"*/{pattern}"))
        if hits:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return runs_dir / hits[0].relative_to(runs_dir).parts[0]
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"{pattern} never appeared (exit code {proc.poll()})")


def test_sigkill_mid_admm_then_resume_ends_where_an_uninterrupted_run_ends(smoke_run: Path, tmp_path: Path) -> None:
    whole = smoke_run  # the same command, never interrupted
    ac = [sys.executable, "-m", "ac_toolchain.cli"]
    proc = subprocess.Popen([*ac, *SMOKE, "--runs-dir", str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    run = _kill_when(proc, tmp_path / "cut", "checkpoints/admm-r1-0002.pt")
    assert not (run / "rounds" / "1" / "admm.pt").exists()  # killed inside the ADMM stage
    result = _ac("compress", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert "dense model loaded" in result.output and "resuming admm-r1 after epoch" in result.output
    epoch = int(result.output.split("resuming admm-r1 after epoch ")[1].split()[0])
    assert epoch >= 2  # at most the epoch under way when killed was lost
    for name in ("rounds/1/admm.pt", "rounds/1/purified.pt", "rounds/2/purified.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (whole, run))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    first, second = (json.loads((d / "report.json").read_text()) for d in (whole, run))
    assert second["compressed"] == first["compressed"] and second["admm"] == first["admm"]
    assert _ac("compress", "--resume", str(run), "--train-epochs", "9").exit_code == 2


def test_sigkill_in_round_2_after_compaction_then_resume_ends_where_an_uninterrupted_run_ends(
    smoke_run: Path, tmp_path: Path
) -> None:
    whole = smoke_run  # retraining and purification ran on the compacted model (prune.compact, the default)
    ac = [sys.executable, "-m", "ac_toolchain.cli"]
    proc = subprocess.Popen([*ac, *SMOKE, "--runs-dir", str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    run = _kill_when(proc, tmp_path / "cut", "checkpoints/retrain-r2-0001.pt")
    assert not (run / "rounds" / "2" / "retrained.pt").exists()  # killed inside round 2's compacted retraining
    first = torch.load(run / "checkpoints" / "retrain-r2-0001.pt", weights_only=True)["model"]
    full = torch.load(run / "dense.pt", weights_only=True)
    assert any(first[k].shape != full[k].shape for k in full)  # the checkpoint is of the compacted model
    result = _ac("compress", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert "resuming retrain-r2 after epoch 1" in result.output
    for name in ("rounds/2/retrained.pt", "rounds/2/purified.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (whole, run))
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((run / "report.json").read_text())["compressed"] == json.loads(
        (whole / "report.json").read_text())["compressed"]  # fmt: skip


def test_sigkill_mid_search_then_resume_ends_with_the_same_spec(smoke_run: Path, tmp_path: Path) -> None:
    whole = smoke_run
    ac = [sys.executable, "-m", "ac_toolchain.cli"]
    proc = subprocess.Popen([*ac, *SMOKE, "--runs-dir", str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    run = _kill_when(proc, tmp_path / "cut", "rounds/2/search-state.json")
    assert not (run / "rounds" / "2" / "rates.json").exists()  # killed inside round 2's search
    result = _ac("compress", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert "resuming the round 2 search after proposal" in result.output
    assert (run / "search.jsonl").read_text() == (whole / "search.jsonl").read_text()  # no proposal lost or doubled
    for name in ("rounds/2/rates.json", "report.json"):
        a, b = (json.loads((d / name).read_text()) for d in (whole, run))
        if name == "report.json":
            a, b = ({k: r[k] for k in ("compressed", "rates", "ratios")} for r in (a, b))
        assert a == b, name


def _fingerprints(run: Path, names: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    return {n: ((run / n).stat().st_mtime_ns, hashlib.sha256((run / n).read_bytes()).hexdigest()) for n in names}


BUILT = ("dense.onnx", "model.onnx", "model.tvm.onnx", "arm64/model.so", "arm64/manifest.json")
SAME = ("dense", "compressed", "ratios", "rates", "layers", "admm", "method", "purification", "compact_max_abs_diff",
        "onnx_max_abs_diff")  # fmt: skip
CLOCK = ("seconds", "proposals_per_minute")  # of the search summaries: wall-clock, not results


def test_sigkill_during_the_bench_then_resume_redoes_neither_onnx_nor_the_tvm_build(
    smoke_run: Path, tmp_path: Path
) -> None:
    whole = smoke_run
    ac = [sys.executable, "-m", "ac_toolchain.cli"]
    cmd = [*ac, *SMOKE, "--bench", "qemu-arm64", "--runs-dir", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = _kill_when(proc, tmp_path / "cut", "bench/artifacts", timeout=900)
    assert (run / "records" / "compile.json").is_file()  # killed after the compile stage ...
    assert not (run / "records" / "bench-qemu-arm64.json").exists()  # ... in the bench
    assert not (run / "report.json").exists()
    before = _fingerprints(run, BUILT)
    result = _ac("compress", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert _fingerprints(run, BUILT) == before  # neither the ONNX files nor the TVM build were made again
    first, second = (json.loads((d / "report.json").read_text()) for d in (whole, run))
    assert {k: second[k] for k in SAME} == {k: first[k] for k in SAME}
    assert [{k: v for k, v in s.items() if k not in CLOCK} for s in second["search"]] == [
        {k: v for k, v in s.items() if k not in CLOCK} for s in first["search"]]  # fmt: skip
    assert second["compile"]["status"] == first["compile"]["status"]
    copy = shutil.copytree(whole, tmp_path / "whole")  # the uninterrupted run (no bench stage), benched apart
    assert _ac("bench", str(copy), "--bench", "qemu-arm64").exit_code == 0
    benched = json.loads((copy / "report.json").read_text())
    bench = [r["bench"]["qemu-arm64"] for r in (benched, second)]
    assert bench[0]["metric"] == bench[1]["metric"] == "instructions"
    # qemu counts of the same runners vary by ~0.01-0.05 % between benches (far inside the 2 % CI gate)
    assert bench[1]["speedup"] == pytest.approx(bench[0]["speedup"], rel=5e-3)
    again = _ac("compress", "--resume", str(run))  # a finished run: every stage restored, nothing redone
    assert again.exit_code == 0 and _fingerprints(run, BUILT) == before
    assert json.loads((run / "report.json").read_text()) == second


def test_prune_compact_export_commands_on_a_run(tmp_path: Path) -> None:
    assert _ac("train", "lenet5", "--preset", "smoke", "--runs-dir", str(tmp_path)).exit_code == 0
    dense = _only_run(tmp_path) / "dense.pt"
    pruned = dense.parent / "pruned.pt"
    result = _ac("prune", str(dense), "--rate", "0.75", "--scheme", "filter+column", "--out", str(pruned))
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "3/6" in result.output  # 1 - sqrt(0.25) = 0.5 of 6 filters go
    small = _ac("compact", str(pruned), "--out", str(tmp_path / "compact.pt2"))
    assert small.exit_code == 0, small.output
    assert "CompactConv2d" in small.output and (tmp_path / "compact.pt2").is_file()
    diff = float(small.output.rsplit("masked| on a random input: ", 1)[1].split()[0])
    assert diff <= 1e-4
    onnx_out = _ac("export", str(pruned), "--out", str(tmp_path / "m.onnx"))
    assert onnx_out.exit_code == 0 and (tmp_path / "m.onnx").is_file()
    assert float(onnx_out.output.rsplit("difference ", 1)[1].split()[0]) <= 1e-4
    assert _ac("prune", str(dense), "--rate", "1.0").exit_code == 2
    assert _ac("prune", str(dense), "--prune-rate", "0.75", "--prune-scheme", "filter+column").output.count("3/6") == 1
    idle = _ac("prune", str(dense), "--rate", "0.5", "--admm-iterations", "3")
    assert idle.exit_code == 2 and "admm.iterations apply only with --method admm" in idle.output
    admm = _ac("prune", str(dense), "--method", "admm", "--rate", "0.5", "--admm-iterations", "2",
               "--prune-finetune-epochs", "1", "--runs-dir", str(tmp_path / "pruned"))  # fmt: skip
    assert admm.exit_code == 0, admm.output
    record = json.loads((_only_run(tmp_path / "pruned") / "prune.json").read_text())
    assert len(record["admm"]) == 2 and record["compressed"]["params"] < 61_706 / 3


def test_user_model_file_runs_the_chain(tmp_path: Path) -> None:
    src = tmp_path / "my_net.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes, in_channels):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(\n"
        "            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),\n"
        "            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))\n"
        "        self.fc = nn.Linear(8 * 7 * 7, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.flatten(self.body(x), 1))\n"
    )
    result = _ac(
        "compress", f"{src}:Net", "--input-shape", "1,1,28,28", "--train-epochs", "1", "--train-max-batches", "20",
        "--prune-finetune-epochs", "1", "--prune-scheme", "filter+column", "--prune-rate", "0.6",
        "--prune-method", "oneshot", "--search", "uniform",  # the user-model path: no ADMM, no search
        "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path / "runs")
    report = json.loads((run / "report.json").read_text())
    assert report["model"] == f"{src}:Net" and report["compressed"]["params"] < report["dense"]["params"]
    assert report["compact_max_abs_diff"] <= 1e-4 and report["onnx_max_abs_diff"] <= 1e-4
    assert report["compile"]["max_abs_diff"] <= 1e-4  # the x86 TVM build, run here
    again = _ac("compile", str(run), "--target", "opencl")
    assert again.exit_code == 0, again.output
    assert (run / "opencl" / "kernels.cl").is_file() and "manifest:" in again.output


@pytest.mark.slow
def test_default_resnet18_command_reaches_high_accuracy(tmp_path: Path) -> None:
    """The README's main job (`ac compress resnet18 --target arm64`, the oneshot preset): ~15 minutes."""
    result = _ac("compress", "resnet18", "--target", "arm64", "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads((_only_run(tmp_path) / "report.json").read_text())
    assert report["dense"]["accuracy"] > 0.95 and report["dense_training"]["epochs"] >= 3
    assert report["ratios"]["params"] >= 500 and report["accuracy_drop_points"] <= 0.5, report["ratios"]
    assert report["method"]["search"] == "uniform" and report["method"]["prune"] == "oneshot"
    assert report["bench"]["qemu-arm64"]["speedup"] > 10


CHAIN = ["compress", "lenet5", "--preset", "smoke", "--search", "uniform", "--prune-method", "oneshot",
         "--prune-rate", "0.5", "--search-rounds", "1", "--target", "x86"]  # fmt: skip


def test_the_accuracy_floor_catches_a_chain_that_breaks_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ac_toolchain.pipeline import rounds

    good = _ac(*CHAIN, "--runs-dir", str(tmp_path / "good"))
    assert good.exit_code == 0, good.output
    report = json.loads((_only_run(tmp_path / "good") / "report.json").read_text())
    assert report["compressed"]["accuracy"] > ACCURACY_FLOOR

    def zero_everything(*args: Any, **kwargs: Any) -> Any:  # a projection that removes every weight
        masks, plan = project(*args, **kwargs)
        return {k: torch.zeros_like(m) for k, m in masks.items()}, plan

    project = rounds.project
    monkeypatch.setattr(rounds, "project", zero_everything)
    broken = _ac(*CHAIN, "--runs-dir", str(tmp_path / "broken"))
    assert broken.exit_code == 0, broken.output
    report = json.loads((_only_run(tmp_path / "broken") / "report.json").read_text())
    assert report["compressed"]["accuracy"] < ACCURACY_FLOOR  # the floor above would fail this chain


def test_missing_cross_compiler_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = _ac("compress", "lenet5", "--preset", "smoke", "--target", "arm64", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "install it with: bash scripts/install-system-deps.sh" in result.output
    assert not list(tmp_path.glob("*/dense.pt"))
