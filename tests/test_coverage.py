"""The coverage report (`ac prune --explain`): counts and reasons per layer on small hand-written nets, checked
against what pruning then does."""

from pathlib import Path

import torch
from click.testing import CliRunner, Result
from rich.console import Console
from torch import nn

import ac_toolchain as ac
from ac_toolchain.cli import main
from ac_toolchain.coverage import LayerCoverage, Part, coverage_table, explain
from ac_toolchain.prune.schemes import plan_pruning

X = torch.randn(1, 3, 4, 4)


def _ac(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _rows(model: nn.Module) -> dict[str, LayerCoverage]:
    return {r.layer: r for r in explain(model, X)}


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 1))


class Opaque(Plain):
    """A PReLU between conv1 and conv2: a module the graph does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.PReLU(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv2(self.act(self.conv1(x)))), 1))


class GroupedDepthwise(nn.Module):
    """conv -> grouped conv (2 groups of 4) -> depthwise -> pointwise -> mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(self.dw(self.g(self.conv1(x)))).mean([2, 3]))


class Gated(nn.Module):
    """A one-channel gate broadcast over the channels of a mul."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gate = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 1, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.fc((y * torch.sigmoid(self.gate(y))).mean([2, 3]))


def test_plain_cnn_keeps_the_input_channels_and_the_classifier_outputs() -> None:
    rows = _rows(Plain())
    assert list(rows) == ["conv1", "conv2", "fc"]
    assert rows["conv1"].filters == Part(8, 8) and rows["conv1"].channels == Part(0, 3, ("model input",))
    assert rows["conv1"].columns == Part(27, 27)
    assert (rows["conv2"].filters, rows["conv2"].channels, rows["conv2"].columns) == (
        Part(16, 16), Part(8, 8), Part(72, 72))  # fmt: skip
    assert rows["conv2"].kept_whole == []
    assert rows["fc"].filters == Part(0, 10, ("model output",))
    assert rows["fc"].channels == Part(16, 16)  # 256 features = 16 flattened channels of 4x4
    assert rows["fc"].columns == Part(256, 256)
    assert rows["fc"].kept_whole == ["filters frozen: model output"]


def test_a_module_the_graph_does_not_follow_is_named_and_pruning_leaves_its_channels() -> None:
    rows = _rows(Opaque())
    assert rows["conv1"].filters == Part(0, 8, ("consumed by an op the graph does not know (PReLU module act)",))
    assert rows["conv2"].channels == Part(0, 8, ("produced by an op the graph does not know (PReLU module act)",))
    assert rows["conv2"].filters == Part(16, 16)
    graph = ac.trace(Opaque(), X)
    assert all((g.reason is not None) == g.frozen for g in graph.groups)  # every frozen group says why
    plan = {e.name: e for e in plan_pruning(Opaque(), X, 0.5, "filter").layers}
    assert plan["conv1"].groups_total == 0 and plan["conv2"].groups_kept == 8  # what the report promised


def test_grouped_conv_prunes_group_wise_and_keeps_its_columns() -> None:
    row = _rows(GroupedDepthwise())["g"]
    assert row.kind == "grouped g=2"
    assert (row.filters, row.channels) == (Part(8, 8), Part(8, 8))
    assert row.columns == Part(0, 36, ("grouped conv keeps its columns",))
    assert row.kept_whole == ["columns: grouped conv keeps its columns"]
    assert row.notes and "group-wise" in row.notes[0]
    model = GroupedDepthwise()
    masks = ac.prune(model, X, 0.5, scheme="filter")
    kept = masks["g.weight"].flatten(1).amax(1) > 0  # filters with any weight left
    assert kept.sum() == 4 and torch.equal(kept[:4], kept[4:])  # 2 of 4 in each group, the same ones


def test_depthwise_conv_filters_go_with_their_channels() -> None:
    rows = _rows(GroupedDepthwise())
    dw = rows["dw"]
    assert dw.kind == "depthwise" and (dw.filters, dw.channels) == (Part(8, 8), Part(8, 8))
    assert dw.columns == Part(0, 9, ("depthwise conv keeps its columns",))
    assert rows["pw"].channels == Part(8, 8) and rows["fc"].channels == Part(4, 4)


def test_depthwise_conv_on_the_model_input_keeps_everything() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.Conv2d(3, 4, 1))
    dw = _rows(model)["0"]
    assert dw.filters == Part(0, 3, ("model input",)) and dw.channels == Part(0, 3, ("model input",))


def test_a_broadcast_gate_keeps_its_one_filter() -> None:
    rows = _rows(Gated())
    assert rows["gate"].filters == Part(0, 1, ("broadcast over channels at mul",))
    assert rows["conv1"].filters == Part(8, 8)


def test_table_shows_counts_reasons_and_the_grouped_note() -> None:
    console = Console(width=200, record=True)
    console.print(coverage_table(explain(GroupedDepthwise(), X)))
    text = console.export_text()
    assert "grouped g=2" in text and "0/36" in text and "columns: grouped conv keeps its columns" in text
    assert "filters frozen: model output" in text and "grouped: filters and channels go group-wise" in text


def test_cli_explain_prunes_nothing(tmp_path: Path) -> None:
    net = tmp_path / "net.py"
    net.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.Conv2d(8, 4, 3))\n"
    )
    result = _ac("prune", f"{net}:build", "--input-shape", "1,3,8,8", "--explain", "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "what each scheme can prune" in result.output and "PReLU" in result.output
    assert "model output" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py"]  # nothing pruned, nothing saved


def test_explain_refuses_options_it_would_ignore(tmp_path: Path) -> None:
    saved = _ac("prune", "lenet5", "--explain", "--out", str(tmp_path / "x.pt"))
    assert saved.exit_code == 2 and "--explain prunes and saves nothing: drop --out" in saved.output
    rated = _ac("prune", "lenet5", "--explain", "--rate", "0.5")
    assert rated.exit_code == 2 and "drop the option setting prune.rate" in rated.output
    assert not (tmp_path / "x.pt").exists()
