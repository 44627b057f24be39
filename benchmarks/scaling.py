"""Scale-out on torch.distributed: one process with T threads against T processes with one thread each.

    python -m benchmarks.scaling [--models lenet5,resnet18] [--images 1024] [--proposals 4] [--threads 2]
                                 [--repeats 3]

Per model and layout, in fresh processes started by torchrun's launcher API (gloo on CPU): the seconds of one
epoch of dense training (``train.fit``: DDP under more than one process, ``train.batch_size`` the global batch),
of one ADMM epoch (the W-step with ADMM's penalty, then the Z- and U-steps) and the search proxy's proposals per
minute (``search.proxy.Proxy``: fine-tune steps and BatchNorm re-estimation whole on every rank, validation
top-1 sharded and reduced, as ``ac compress`` runs it under torchrun). Each is timed after a warm-up of the same
code on two batches, between barriers, on rank 0's clock; ``--repeats`` launches of each layout, the layouts
alternating, give the median. The 1-minute load average before each launch is recorded: other work on the
cores slows the multi-threaded layout most (its threads wait on each other).

Models: LeNet-5 on the bundled mnist-mini (1x28x28) and ResNet-18 (CIFAR stem, ``--resnet-width`` times the
channels) on synthetic CIFAR-shaped images (3x32x32); ``--images`` training images each, 256 validation images.
Writes benchmarks/results/<out>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

RESULTS = Path(__file__).parent / "results"
MODELS = ("lenet5", "resnet18")
METRICS = {"dense_epoch_s": "dense epoch s", "admm_epoch_s": "ADMM epoch s", "proposals_per_min": "proposals / min"}
BATCH = 64  # the global batch


def _data(model: str, images: int, width: float) -> tuple[torch.nn.Module, Dataset[Any], Dataset[Any], torch.Tensor]:
    """The model, its training and validation images and an example input."""
    from ac_toolchain import build_model
    from ac_toolchain.data import load_dataset

    if model == "lenet5":
        splits = load_dataset("mnist-mini", (1, 28, 28), seed=0, val_fraction=0.1, test_fraction=0.0)
        train, val = Subset(splits.train, range(min(images, len(splits.train)))), splits.val
        net = build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28))
        return net, train, Subset(val, range(min(256, len(val)))), torch.randn(1, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(images + 256, 3, 32, 32, generator=gen), torch.randint(0, 10, (images + 256,), generator=gen)
    net = build_model("resnet18", num_classes=10, in_channels=3, input_size=(32, 32), stem="cifar", width_mult=width)
    return net, TensorDataset(x[:images], y[:images]), TensorDataset(x[images:], y[images:]), torch.randn(1, 3, 32, 32)


def _timed(fn: Any) -> float:
    """Seconds of ``fn()`` on rank 0's clock, all ranks starting and ending together."""
    from ac_toolchain import distributed

    distributed.barrier("scaling")
    start = time.perf_counter()
    fn()
    distributed.barrier("scaling")
    return time.perf_counter() - start


def measure(model: str, images: int, proposals: int, threads: int, width: float) -> dict[str, Any]:
    """One rank of one layout: the three figures (rank 0's are the ones kept)."""
    from ac_toolchain import distributed
    from ac_toolchain.cost.analytic import called_modules
    from ac_toolchain.graph import trace
    from ac_toolchain.prune.admm import Admm, AdmmSettings
    from ac_toolchain.prune.spec import uniform_spec
    from ac_toolchain.search.proxy import Proxy, ProxySettings
    from ac_toolchain.search.space import Space
    from ac_toolchain.train import FitSettings, fit

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    distributed.init(cpu, timeout_s=600)
    try:
        torch.manual_seed(0)
        net, train, val, example = _data(model, images, width)
        graph = trace(net, example)
        warm = FitSettings(1, 0.01, BATCH, max_batches=2)
        fit(net, train, warm, cpu)  # warm-up: the first steps allocate and pick kernels
        dense = _timed(lambda: fit(net, train, FitSettings(1, 0.01, BATCH), cpu))
        spec = uniform_spec(graph.layers, 0.5, "filter")
        fit(net, train, warm, cpu, controllers=[Admm(graph, spec, AdmmSettings(iterations=1))])
        admm = Admm(graph, spec, AdmmSettings(iterations=1))
        admm_s = _timed(lambda: fit(net, train, FitSettings(1, 0.01, BATCH), cpu, controllers=[admm]))
        space = Space(trace(net, example), "params", called_modules(net, example))
        knobs = ProxySettings(bn_batches=4, batch_size=BATCH, seed=0, val_images=256, steps=4, lr=0.01,
                              momentum=0.9, weight_decay=5e-4)  # fmt: skip
        proxy = Proxy(net, space.masks, train, val, cpu, knobs, example=example)
        proxy(uniform_spec(graph.layers, 0.3, "filter"))  # warm-up
        rates = [0.35 + 0.3 * i / max(proposals - 1, 1) for i in range(proposals)]
        search_s = _timed(lambda: [proxy(uniform_spec(graph.layers, r, "filter")) for r in rates])
        return {"rank": distributed.rank(), "dense_epoch_s": dense, "admm_epoch_s": admm_s,
                "proposals_per_min": 60.0 * proposals / search_s}  # fmt: skip
    finally:
        distributed.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_layout(processes: int, threads: int, model: str, images: int, proposals: int, width: float) -> dict[str, Any]:
    """``measure`` on ``processes`` ranks of ``threads`` threads each (torchrun's launcher API); rank 0's row."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")  # fmt: skip
    load = os.getloadavg()[0]
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        rows = elastic_launch(config, measure)(model, images, proposals, threads, width)
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return {"processes": processes, "threads": threads, "load": load, **{k: rows[0][k] for k in METRICS}}


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and layout: the median of each figure over the launches, and the launches."""
    out = []
    for key in dict.fromkeys((r["model"], r["processes"], r["threads"]) for r in runs):
        mine = [r for r in runs if (r["model"], r["processes"], r["threads"]) == key]
        row = {"model": key[0], "processes": key[1], "threads": key[2]}
        out.append({**row, **{k: statistics.median(r[k] for r in mine) for k in METRICS}, "runs": mine})
    return out


def markdown(doc: dict[str, Any]) -> str:
    t = doc["threads"]
    lines = [
        f"# Scaling on torch.distributed: 1 process x {t} threads vs {t} processes x 1 thread", "",
        f"{doc['machine']}; torch {doc['torch']}; gloo. Command: `{doc['command']}`", "",
        f"LeNet-5 on mnist-mini; ResNet-18 (CIFAR stem, width x{doc['resnet_width']}) on synthetic 3x32x32 images. "
        f"{doc['images']} training images per epoch, global batch {BATCH}; proposals: {doc['proposals']} uniform "
        "filter specs, each 4 fine-tune steps, 4 BatchNorm batches and 256 validation images. Each figure is the "
        f"median of {doc['repeats']} launches (rank 0's clock, between barriers; the layouts alternating); 1-minute "
        f"load average before the launches: {_loads(doc)}. Speed-up: the 1-process figure over the "
        f"{t}-process one (above 1: the processes are faster).", "",
        f"| model | figure | 1 process x {t} threads | {t} processes x 1 thread | speed-up |",
        "|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for model in doc["models"]:
        one, many = (next(r for r in doc["rows"] if r["model"] == model and r["processes"] == p) for p in (1, t))
        for key, name in METRICS.items():
            up = one[key] / many[key] if key.endswith("_s") else many[key] / one[key]
            lines.append(f"| {model} | {name} | {one[key]:.2f} | {many[key]:.2f} | {up:.2f}x |")
    return "\n".join(lines) + "\n"


def _loads(doc: dict[str, Any]) -> str:
    loads = [run["load"] for r in doc["rows"] for run in r["runs"]]
    return f"{min(loads):.1f} to {max(loads):.1f} on {doc['machine']}" if loads else "—"


def plot(doc: dict[str, Any], out: Path) -> None:
    t = doc["threads"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(doc["models"]), 1)
    for i, model in enumerate(doc["models"]):
        one, many = (next(r for r in doc["rows"] if r["model"] == model and r["processes"] == p) for p in (1, t))
        ups = [one[k] / many[k] if k.endswith("_s") else many[k] / one[k] for k in METRICS]
        ax.bar([x + i * width for x in range(len(METRICS))], ups, width, label=model)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([x + width * (len(doc["models"]) - 1) / 2 for x in range(len(METRICS))], list(METRICS.values()))
    ax.set_ylabel(f"speed-up of {t} processes x 1 thread")
    ax.set_title(f"1 process x {t} threads vs {t} processes x 1 thread ({doc['machine']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks import peers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--images", type=int, default=1024, help="training images per epoch")
    parser.add_argument("--proposals", type=int, default=4, help="proposals scored per layout")
    parser.add_argument("--threads", type=int, default=2, help="threads of the 1-process layout = processes")
    parser.add_argument("--resnet-width", type=float, default=0.25, help="ResNet-18's width multiplier")
    parser.add_argument("--repeats", type=int, default=3, help="launches of each layout (the median is kept)")
    parser.add_argument("--out", default="scaling")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    doc: dict[str, Any] = {
        "models": args.models.split(","), "images": args.images, "proposals": args.proposals,
        "threads": args.threads, "resnet_width": args.resnet_width, "repeats": args.repeats, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["python -m benchmarks.scaling", *argv]), "rows": [],
    }  # fmt: skip
    unknown = [m for m in doc["models"] if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: {', '.join(unknown)} not among {', '.join(MODELS)}")
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        for model in doc["models"]:
            for processes, threads in ((1, args.threads), (args.threads, 1)):
                row = run_layout(processes, threads, model, args.images, args.proposals, args.resnet_width)
                runs.append({"model": model, **row})
                print(runs[-1], flush=True)
    doc["rows"] = median_rows(runs)
    peers.write(doc, args.results_dir, args.out, markdown, plot)
    return doc


if __name__ == "__main__":
    main()
