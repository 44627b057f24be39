"""The CLI: help with examples, the smoke chain end to end, resume, and one clear error per bad input."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ac_toolchain.cli import main

COMMANDS = ["compress", "train", "eval", "count", "prune", "compact", "export", "compile", "bench", "targets"]


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
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], needle: str, tmp_path: Path) -> None:
    result = _ac(*args, "--runs-dir", str(tmp_path)) if args[0] == "compress" and len(args) > 1 else _ac(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and needle in result.output
    assert "Traceback" not in result.output


def test_count_prints_the_reference_param_count() -> None:
    result = _ac("count", "resnet18", "--input-shape", "1,3,32,32")
    assert result.exit_code == 0 and "11,173,962" in result.output


def _only_run(runs_dir: Path) -> Path:
    (run,) = list(runs_dir.iterdir())
    return run


def test_smoke_chain_writes_a_complete_report(tmp_path: Path) -> None:
    result = _ac("compress", "lenet5", "--preset", "smoke", "--target", "arm64", "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path)
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
    assert report["compressed"]["params"] < report["dense"]["params"] / 1.5
    assert report["ratios"]["params"] == round(report["dense"]["params"] / report["compressed"]["params"], 3)
    assert [(x["name"], x["groups_kept"], x["groups_total"]) for x in report["layers"]] == [
        ("conv1", 3, 6),
        ("conv2", 8, 16),
    ]
    assert report["onnx_max_abs_diff"] <= 1e-4
    assert "compiled with TVM for arm64" in report["compile"]["status"]
    assert (run / "arm64" / "model.so").read_bytes()[18] == 183  # ELF e_machine: AArch64
    assert json.loads((run / "arm64" / "manifest.json").read_text())["target"] == "arm64"
    assert all(Path(p).exists() for p in report["artifacts"].values())
    assert "| dense |" in (run / "report.md").read_text()

    # the checkpoint is evaluated again from the run directory, to the same accuracy
    again = _ac("eval", str(run / "compressed.pt"))
    assert again.exit_code == 0
    assert f'"accuracy": {report["compressed"]["accuracy"]}' in again.output


def test_resume_finishes_an_interrupted_run(tmp_path: Path) -> None:
    args = ["compress", "lenet5", "--preset", "smoke", "--runs-dir", str(tmp_path)]
    assert _ac(*args).exit_code == 0
    run = _only_run(tmp_path)
    first = json.loads((run / "report.json").read_text())
    for name in ("compressed.pt", "report.json", "model.onnx"):  # as if killed during fine-tuning
        (run / name).unlink()
    result = _ac("compress", "--resume", str(run))
    assert result.exit_code == 0, result.output
    assert "dense model loaded" in result.output and "resuming finetune after epoch 1" in result.output
    second = json.loads((run / "report.json").read_text())
    assert second["compressed"] == first["compressed"]
    assert _ac("compress", "--resume", str(run), "--train-epochs", "9").exit_code == 2


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
    """The README's main job (`ac compress resnet18 --target arm64`, cpu preset): minutes of training."""
    result = _ac("compress", "resnet18", "--target", "arm64", "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads((_only_run(tmp_path) / "report.json").read_text())
    assert report["dense"]["accuracy"] > 0.9 and report["compressed"]["accuracy"] > 0.9
    assert report["ratios"]["params"] > 3.5


def test_missing_cross_compiler_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = _ac("compress", "lenet5", "--preset", "smoke", "--target", "arm64", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "install it with: bash scripts/install-system-deps.sh" in result.output
    assert not list(tmp_path.glob("*/dense.pt"))
