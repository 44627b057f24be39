"""``prune.compact``: the Retrain and Purify stages work on the shrunk model (ac_toolchain/compact/compactor.py,
``shrink``) and write it back; a round ends where the same round on the full masked model ends."""

from __future__ import annotations

from pathlib import Path

import torch

from ac_toolchain import config as cfgmod
from ac_toolchain.context import open_run
from ac_toolchain.pipeline import new_state
from ac_toolchain.pipeline.base import RoundRecord, model_graph
from ac_toolchain.pipeline.rounds import Purify, Retrain, with_teacher
from ac_toolchain.prune.spec import uniform_spec
from ac_toolchain.runs import safe_load


def _round(tmp_path: Path, compact: bool) -> tuple[dict, dict, str]:
    overrides = {"run.runs_dir": str(tmp_path / str(compact)), "prune.compact": compact, "purify.tolerance": 5.0,
                 "train.max_batches": 20}  # fmt: skip
    cfg, _ = cfgmod.resolve("lenet5", "smoke", overrides)
    run = open_run(cfg)
    torch.manual_seed(0)
    state = with_teacher(run, new_state(run))
    state.rounds.append(RoundRecord(1, uniform_spec(model_graph(run, state.model).layers, 0.6, "filter+column")))
    state = Purify(1).run(run, Retrain(1).run(run, state))
    retrained = safe_load(Retrain(1).products(run)[1])
    purified = safe_load(Purify(1).products(run)[0])
    return retrained, purified, (run.dir / "rounds" / "1" / "purified.json").read_text()


def test_a_compacted_round_ends_where_the_masked_round_ends(tmp_path: Path) -> None:
    small, full = _round(tmp_path, True), _round(tmp_path, False)
    for name in small[0]:  # retraining: the same weights and BN statistics
        assert torch.allclose(small[0][name].float(), full[0][name].float(), atol=1e-4), name
    assert small[1]["masks"].keys() == full[1]["masks"].keys()
    assert all(torch.equal(small[1]["masks"][k], full[1]["masks"][k]) for k in full[1]["masks"])  # same removals
    assert small[2] == full[2]  # the same purification record: steps, drops, bounds
    for name, value in full[1]["model"].items():
        assert torch.allclose(small[1]["model"][name].float(), value.float(), atol=1e-4), name
