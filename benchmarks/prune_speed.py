"""Speed of one-shot pruning and compaction on deep networks: seconds by network and scheme.

    python -m benchmarks.prune_speed [--size 64] [--rate 0.5] [--schemes filter,column] [--baseline FILE]

Networks at 3x<size>x<size>, batch 1, random weights: DenseNet-121 and -169 (written here: torchvision's layout
of dense blocks, growth 32, bottleneck 4, transitions halving the channels; a 3x3 stride-1 stem), and the zoo's
mobilenetv2 (inverted residuals), resnet50 and resnext29 (grouped 3x3 convs). Per network and scheme: ``prune``
is ``ac.prune`` (trace, projection, masks applied), ``compact`` is ``ac.compact`` (trace, physical removal), each
timed once after one warm-up trace of a small net (torch's first fake-tensor run imports and caches much).
``--baseline`` is a JSON this script wrote on other code (say, before a change): its seconds become the
"before" columns. Writes benchmarks/results/prune_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

import ac_toolchain as ac
from benchmarks import peers

RESULTS = Path(__file__).parent / "results"


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, bottleneck * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm2(self.conv1(torch.relu(self.norm1(x))))))


class DenseBlock(nn.Module):
    def __init__(self, cin: int, depth: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def _transition(c: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], growth: int = 32, stem: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        stages: list[nn.Module] = []
        c = stem
        for i, depth in enumerate(blocks):
            stages.append(DenseBlock(c, depth, growth))
            c += depth * growth
            if i < len(blocks) - 1:
                stages.append(_transition(c))
                c //= 2
        self.features = nn.Sequential(*stages)
        self.norm, self.fc = nn.BatchNorm2d(c), nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.features(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _zoo(name: str) -> Callable[[int], nn.Module]:
    return lambda size: ac.build_model(name, num_classes=10, in_channels=3, input_size=(size, size))


NETWORKS: dict[str, Callable[[int], nn.Module]] = {
    "densenet121": lambda size: DenseNet((6, 12, 24, 16)),
    "densenet169": lambda size: DenseNet((6, 12, 32, 32)),
    "mobilenetv2": _zoo("mobilenetv2"),
    "resnet50": _zoo("resnet50"),
    "resnext29": _zoo("resnext29"),
}


def _layers(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(name: str, scheme: str, size: int, rate: float) -> dict[str, Any]:
    torch.manual_seed(0)
    model = NETWORKS[name](size).eval()
    x = torch.randn(1, 3, size, size)
    row: dict[str, Any] = {"network": name, "scheme": scheme, "layers": _layers(model), "params": _params(model)}
    start = time.perf_counter()
    ac.prune(model, x, rate, scheme)
    row["prune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    small = ac.compact(model, x)
    row["compact_s"] = time.perf_counter() - start
    row["params_after"] = _params(small)
    return row


def _warm_up() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    ac.trace(net, torch.randn(1, 3, 8, 8))


def _before(baseline: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any] | None:
    rows = baseline["rows"] if baseline else []
    return next((r for r in rows if (r["network"], r["scheme"]) == (row["network"], row["scheme"])), None)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Prune and compaction speed, 3x{doc['size']}x{doc['size']}, rate {doc['rate']}", "",
        f"{doc['machine']}; torch {doc['torch']}. Command: `{doc['command']}`", "",
        "| network | scheme | layers | params | params after | prune s | compact s | before: prune s | compact s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in doc["rows"]:
        old = _before(doc.get("baseline"), r)
        was = f"{old['prune_s']:.1f} | {old['compact_s']:.1f}" if old else "— | —"
        lines.append(f"| {r['network']} | {r['scheme']} | {r['layers']} | {r['params']:,} | {r['params_after']:,} "
                     f"| {r['prune_s']:.1f} | {r['compact_s']:.1f} | {was} |")  # fmt: skip
    if doc.get("baseline"):
        lines += ["", f"Before: {doc['baseline']['label']}."]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], out: Path) -> None:
    rows = doc["rows"]
    labels = [f"{r['network']}\n{r['scheme']}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    ax.bar(xs, [r["prune_s"] for r in rows], label="prune")
    ax.bar(xs, [r["compact_s"] for r in rows], bottom=[r["prune_s"] for r in rows], label="compact")
    before = [_before(doc.get("baseline"), r) for r in rows]
    if any(before):
        ax.scatter([x for x, b in zip(xs, before, strict=True) if b],
                   [b["prune_s"] + b["compact_s"] for b in before if b], color="k", marker="_", s=300,
                   label="before (prune + compact)")  # fmt: skip
        ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title(f"one-shot prune + compaction, 3x{doc['size']}x{doc['size']}, {doc['machine']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--schemes", default="filter,column")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--baseline", type=Path, help="a JSON of this benchmark on other code: the 'before' columns")
    parser.add_argument("--label", default="this tree", help="what the measured code is, for a later --baseline")
    parser.add_argument("--out", default="prune_speed")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    _warm_up()
    doc: dict[str, Any] = {
        "size": args.size, "rate": args.rate, "label": args.label, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": " ".join(["python -m benchmarks.prune_speed", *argv]), "rows": [],
        "baseline": json.loads(args.baseline.read_text()) if args.baseline else None,
    }  # fmt: skip
    for name in args.networks.split(","):
        for scheme in args.schemes.split(","):
            doc["rows"].append(measure(name, scheme, args.size, args.rate))
            print(json.dumps(doc["rows"][-1]), flush=True)
            peers.write(doc, args.results_dir, args.out, markdown, plot)


if __name__ == "__main__":
    main()
