"""The chain under torch.distributed: 2 CPU ranks (gloo) launched with torchrun's own API (elastic_launch).

One launch runs every check of the training loops and hands back what each rank ended with; the parent compares
the ranks with each other and with the single process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch import nn
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.utils.data import DataLoader, TensorDataset

from ac_toolchain import distributed
from ac_toolchain.graph import trace
from ac_toolchain.prune.admm import Admm, AdmmSettings
from ac_toolchain.prune.schemes import prune
from ac_toolchain.prune.spec import uniform_spec
from ac_toolchain.train import FitSettings, correct_per_image, evaluate, fit

CPU = torch.device("cpu")
SETTINGS = FitSettings(2, 0.05, 16, momentum=0.9, weight_decay=5e-4)  # 64 images: 4 global batches of 16


def _net() -> nn.Sequential:
    """No BatchNorm: DDP's averaged gradients then equal the full batch's (up to the summation order)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def _data(n: int = 64) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _trained() -> dict[str, torch.Tensor]:
    """67 images: the last batch of 3 splits 2 + 1 over the ranks, weighted back to the batch's mean loss."""
    net = _net()
    fit(net, _data(67), SETTINGS, CPU)
    return _state(net)


def _masked() -> dict[str, Any]:
    net = _net()
    masks = prune(net, torch.randn(1, 1, 8, 8), 0.5, "filter+column")
    fit(net, _data(), SETTINGS, CPU, masks=masks)
    return {"weights": _state(net), "masks": masks}


def _admm() -> dict[str, Any]:
    net = _net()
    graph = trace(net, torch.randn(1, 1, 8, 8))
    admm = Admm(graph, uniform_spec(graph.layers, 0.5, "filter"), AdmmSettings(iterations=2))
    fit(net, _data(), SETTINGS, CPU, controllers=[admm])
    return {"Z": admm.Z, "U": admm.U, "log": admm.log}


def _scores() -> dict[str, Any]:
    net = _net()
    val = DataLoader(_data(37), batch_size=8)  # 37 images: the ranks' shares differ in size
    return {"accuracy": evaluate(net, val, CPU, label=""), "hits": correct_per_image(net, val, CPU)}


def _proxy() -> dict[str, Any]:
    """A search proposal scored by the proxy: BatchNorm re-estimated on 3 batches (2 on rank 0, 1 on rank 1), and
    in a model without BatchNorm 3 fine-tune steps, each rank a share of every batch."""
    from ac_toolchain.search.proxy import Proxy, ProxySettings

    out: dict[str, Any] = {}
    for kind, net, settings in (
        ("bn", _bn_net(), ProxySettings(bn_batches=3, batch_size=16, seed=0)),
        ("tuned", _net(), ProxySettings(bn_batches=0, batch_size=16, seed=0, steps=3, lr=0.05)),
    ):  # fmt: skip
        graph = trace(net, torch.randn(1, 1, 8, 8))
        spec = uniform_spec(graph.layers, 0.5, "filter")
        masks = prune(_bn_net() if kind == "bn" else _net(), torch.randn(1, 1, 8, 8), 0.5, "filter")
        seen: list[int] = []  # images through the model on this rank (the proxy's deep copy keeps the hook)
        net[0].register_forward_pre_hook(lambda _, args, seen=seen: seen.append(len(args[0])))
        proxy = Proxy(net, lambda _, m=masks: m, _data(), _data(37), CPU, settings)
        out[kind] = {"score": proxy(spec), "state": _state(proxy.net), "images": sum(seen)}
    return out


def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def _sync_bn() -> dict[str, Any]:
    """Inside sync_batchnorm the BatchNorm is a SyncBatchNorm sharing its parameters and statistics; after it the
    BatchNorm itself is back. (torch's SyncBatchNorm refuses CPU tensors in training, so no step is taken here.)"""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    bn = net[1]
    with distributed.sync_batchnorm(net):
        inside = net[1]
        shared = inside.weight is bn.weight and inside.running_mean is bn.running_mean
        net.eval()
    return {"inside": type(inside).__name__, "shared": shared, "after": net[1] is bn, "mode": bn.training}


def _writes(run_dir: str) -> None:
    """The checkpoint writer of train_stage, each rank pointed at a folder of its own: rank 0 alone writes."""
    from ac_toolchain.context import checkpoint_writer

    mine = Path(run_dir) / f"rank{distributed.rank()}"
    (mine / "checkpoints").mkdir(parents=True)
    checkpoint_writer(mine, "dense")(1, {"model": _net().state_dict()})


def _worker(run_dir: str) -> dict[str, Any]:
    """One rank: every check, its results handed back to the parent."""
    torch.set_num_threads(1)
    distributed.init(CPU, timeout_s=60)
    try:
        _writes(run_dir)
        return {"rank": distributed.rank(), "trained": _trained(), "masked": _masked(), "admm": _admm(),
                "scores": _scores(), "sync_bn": _sync_bn(), "proxy": _proxy()}  # fmt: skip
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(fn: Any, *args: Any, ranks: int = 2) -> dict[int, Any]:
    """``fn(*args)`` on ``ranks`` CPU processes through torchrun's launcher API; the return value of each rank."""
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=ranks, rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")  # fmt: skip
    return elastic_launch(config, fn)(*args)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = launch(_worker, str(run_dir))
    return {"run_dir": run_dir, "ranks": [results[r] for r in sorted(results)]}


def test_each_rank_knows_its_rank(ranks: dict[str, Any]) -> None:
    assert [r["rank"] for r in ranks["ranks"]] == [0, 1]


def test_ddp_training_equals_the_single_process_on_the_same_global_batch(ranks: dict[str, Any]) -> None:
    want = _trained()
    first, second = (r["trained"] for r in ranks["ranks"])
    for name, w in want.items():
        assert torch.equal(first[name], second[name]), name  # the ranks hold the same weights, bit for bit
        assert torch.allclose(first[name], w, atol=1e-5, rtol=0), name
        assert not torch.equal(w, _state(_net())[name])  # and they did train


def test_no_rank_revives_a_pruned_weight(ranks: dict[str, Any]) -> None:
    for r in ranks["ranks"]:
        masked = r["masked"]
        for name, mask in masked["masks"].items():
            assert masked["weights"][name][mask == 0].abs().max() == 0, name
    first, second = (r["masked"]["weights"] for r in ranks["ranks"])
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_admm_z_and_u_are_identical_on_every_rank(ranks: dict[str, Any]) -> None:
    """Each rank projects its own (identical) weights: no broadcast, the same Z and U bit for bit."""
    first, second = (r["admm"] for r in ranks["ranks"])
    for part in ("Z", "U"):
        assert first[part].keys() == second[part].keys()
        assert all(torch.equal(first[part][k], second[part][k]) for k in first[part])
    assert [e["loss"] for e in first["log"]] == [e["loss"] for e in second["log"]]
    single = _admm()
    assert all(torch.allclose(first["Z"][k], single["Z"][k], atol=1e-5, rtol=0) for k in single["Z"])


def test_accuracy_is_reduced_over_the_ranks(ranks: dict[str, Any]) -> None:
    want = _scores()
    for r in ranks["ranks"]:
        assert r["scores"]["accuracy"] == want["accuracy"]
        assert torch.equal(r["scores"]["hits"], want["hits"])  # every image, in the loader's order


def test_the_search_proxy_spreads_bn_re_estimation_and_fine_tuning_over_the_ranks(ranks: dict[str, Any]) -> None:
    want = _proxy()
    first, second = (r["proxy"] for r in ranks["ranks"])
    for kind in ("bn", "tuned"):
        assert first[kind]["score"] == second[kind]["score"] == want[kind]["score"], kind
        for name, w in want[kind]["state"].items():
            a, b = first[kind]["state"][name], second[kind]["state"][name]
            assert torch.equal(a, b), (kind, name)  # the ranks agree bit for bit
            assert torch.allclose(a, w.to(a.dtype), atol=1e-5, rtol=1e-5), (kind, name)  # and with one process
    for kind in ("bn", "tuned"):  # the ranks shared the work: together as many images as one process, each fewer
        assert first[kind]["images"] + second[kind]["images"] == want[kind]["images"], kind
        assert max(first[kind]["images"], second[kind]["images"]) < want[kind]["images"], kind
    stats = want["bn"]["state"]
    assert int(first["bn"]["state"]["1.num_batches_tracked"]) == 3  # all 3 batches, from both ranks
    assert not torch.equal(stats["1.running_mean"], torch.zeros(6))  # re-estimated, not reset
    assert not torch.equal(want["tuned"]["state"]["0.weight"], _state(_net())["0.weight"])  # and tuned


def test_sync_batchnorm_swaps_batchnorm_in_and_back_out(ranks: dict[str, Any]) -> None:
    for r in ranks["ranks"]:
        assert r["sync_bn"] == {"inside": "SyncBatchNorm", "shared": True, "after": True, "mode": False}
    net = nn.Sequential(nn.BatchNorm2d(4))
    with distributed.sync_batchnorm(net):  # a single process has nothing to synchronise
        assert type(net[0]) is nn.BatchNorm2d


def test_only_rank_0_writes(ranks: dict[str, Any]) -> None:
    run_dir = ranks["run_dir"]
    assert [p.name for p in (run_dir / "rank0" / "checkpoints").iterdir()] == ["dense-0001.pt"]
    assert list((run_dir / "rank1" / "checkpoints").iterdir()) == []


def _ac(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "ac_toolchain", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_a_bad_input_under_two_ranks_is_one_line_and_exit_2_without_a_run_directory(tmp_path: Path) -> None:
    """The data folder is missing: both workers fail in their checks, the launcher says it once."""
    start = time.perf_counter()
    out = _ac("compress", "lenet5", "--preset", "smoke", "--nproc-per-node", "2", "--runs-dir", "runs",
              "--data", "imagefolder:missing", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "missing" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
    assert time.perf_counter() - start < 60


# A short chain: 3 ADMM epochs of 16 batches, so a worker can be killed between ADMM checkpoints
CHAIN = ("compress", "lenet5", "--preset", "smoke", "--runs-dir", "runs", "--search", "uniform", "--params-x", "5",
         "--search-rounds", "1", "--train-epochs", "1", "--train-max-batches", "16", "--train-min-above-chance", "0",
         "--admm-iterations", "3", "--purify-max-steps", "1", "--target", "x86", "--dist-timeout", "60")  # fmt: skip
ROUND_PRODUCTS = ("admm.pt", "masks.pt", "retrained.pt", "purified.pt")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The short chain on 2 ranks through `ac compress --nproc-per-node 2`, uninterrupted."""
    cwd = tmp_path_factory.mktemp("chain")
    out = _ac(*CHAIN, "--nproc-per-node", "2", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"runs": list((cwd / "runs").iterdir()), "stdout": out.stdout}


def test_two_ranks_compress_with_rank_0_the_one_writer(chain: dict[str, Any]) -> None:
    """A short chain on 2 ranks ends with a complete run directory, the only one, written by rank 0."""
    runs = chain["runs"]
    assert len(runs) == 1
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["compressed"]["accuracy"] > 0
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir()) == [
        "admm-r1-0003.pt", "dense-0001.pt", "retrain-r1-0001.pt"]  # fmt: skip
    assert chain["stdout"].count("preset none") == 1  # the workers read the resolved config: rank 0 alone prints


def test_two_ranks_end_with_the_single_process_figures(chain: dict[str, Any], tmp_path: Path) -> None:
    """The short chain in one process: the same structure, and the same top-1 within a point. Its few dozen SGD
    steps keep the ranks' different order of sums small; a long training amplifies it as much as a change of
    torch's thread count in one process does (docs/distributed.md), so longer chains agree only in distribution."""
    out = _ac(*CHAIN, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (one,) = (tmp_path / "runs").iterdir()
    a, b = (json.loads((d / "report.json").read_text()) for d in (one, chain["runs"][0]))
    assert a["ratios"] == b["ratios"] and a["compressed"]["params"] == b["compressed"]["params"]
    assert [x["groups_kept"] for x in a["layers"]] == [x["groups_kept"] for x in b["layers"]]
    for part in ("dense", "compressed"):
        assert a[part]["accuracy"] == pytest.approx(b[part]["accuracy"], abs=0.01), part


def _tensors(obj: Any, path: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a saved product (nested dicts and lists), by its path."""
    if isinstance(obj, torch.Tensor):
        return {path: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else []
    return {k: v for key, value in items for k, v in _tensors(value, f"{path}/{key}").items()}


def _worker_of_rank(agent: int, rank: int) -> psutil.Process:
    """The worker process of ``rank`` that torchrun (process ``agent``) started."""
    for p in psutil.Process(agent).children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank):
                return p
        except psutil.Error:
            continue
    raise AssertionError(f"no worker of rank {rank} under torchrun (pid {agent})")


def test_a_worker_killed_mid_admm_is_restarted_and_ends_where_the_uninterrupted_run_ends(
    tmp_path: Path, chain: dict[str, Any]
) -> None:  # fmt: skip
    """torchrun --max-restarts 1; rank 1 gets SIGKILL once the first ADMM checkpoint exists: torchrun restarts
    the group, the ranks find rank 0's run directory by the launch's id, resume ADMM from its newest checkpoint
    (not from a half-written one) and end with the uninterrupted run's products."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = f"{Path(__file__).resolve().parent.parent}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "--monitor-interval", "0.1", "-m", "ac_toolchain", *CHAIN]  # fmt: skip
    torchrun = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("runs/*/checkpoints/admm-r1-*.pt")):
            assert torchrun.poll() is None and time.monotonic() < deadline, "no ADMM checkpoint before the end"
            time.sleep(0.01)
        _worker_of_rank(torchrun.pid, 1).send_signal(signal.SIGKILL)
        (checkpoints,) = tmp_path.glob("runs/*/checkpoints")  # what the atomic writer leaves when killed mid-write
        (checkpoints / ".admm-r1-0003.pt.x1y2.tmp").write_bytes(b"PK\x03\x04 cut off")
        out, _ = torchrun.communicate(timeout=300)
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
    assert torchrun.returncode == 0, out[-3000:]
    assert "torchrun restart 1: resuming" in out and "resuming admm-r1 after epoch" in out, out[-3000:]
    (run,) = (tmp_path / "runs").iterdir()  # the restarted group wrote on in the same run directory
    (want,) = chain["runs"]
    for name in ROUND_PRODUCTS:
        got, ref = (_tensors(torch.load(d / "rounds" / "1" / name, weights_only=True)) for d in (run, want))
        assert got.keys() == ref.keys() and ref, name
        for k in ref:
            assert torch.allclose(got[k].double(), ref[k].double(), atol=1e-5, rtol=0), f"{name}: {k}"
    figures = [json.loads((d / "report.json").read_text())["compressed"]["accuracy"] for d in (run, want)]
    assert figures[0] == pytest.approx(figures[1], abs=1e-6)


def test_the_launcher_passes_max_restarts_to_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ac compress --nproc-per-node N --max-restarts K` is torchrun --standalone with K restarts."""
    import torch.distributed.run as torchrun

    from ac_toolchain import cli

    seen: list[Any] = []
    monkeypatch.setattr(torchrun, "run", seen.append)
    cli.launch(2, ["config.toml"], max_restarts=3)
    (args,) = seen
    assert (args.standalone, args.nproc_per_node, args.max_restarts) == (True, "2", 3)
    assert args.module and args.training_script == "ac_toolchain" and args.training_script_args[-1] == "config.toml"
