"""Purification's acceptance criteria (purify.criterion): ``paired`` bounds the drop image by image and rejects a
net loss hidden in many discordant images that ``tolerance`` lets through; its bound is the textbook one."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ac_toolchain import config as cfgmod
from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import trace
from ac_toolchain.prune.purify import CRITERIA, RedundantReport, mean_drop, paired_drop, purify_redundant
from tests.prune.test_purify import X8, _same_state, _small

stats = pytest.importorskip("scipy.stats")
N = 500  # validation images


def _vectors(n: int, both: int, b: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference and candidate correctness on n images: ``both`` right in each, b right only in the reference,
    c right only in the candidate (the rest wrong in both), in a random order."""
    ref = torch.tensor([True] * both + [True] * b + [False] * c + [False] * (n - both - b - c))
    cand = torch.tensor([True] * both + [False] * b + [True] * c + [False] * (n - both - b - c))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return ref[order], cand[order]


def _hand_bound(n: int, b: int, c: int) -> float:
    """Points: the one-sided 95 % normal upper bound of the paired drop, from the counts alone."""
    mean = (b - c) / n
    var = (b + c - n * mean**2) / (n - 1)  # sample variance of differences in {-1, 0, 1}
    return 100 * (mean + stats.norm.ppf(0.95) * math.sqrt(var / n))


class Stub:
    """Per-image scorer: the reference vector for the unpruned net, the candidate's once anything is gone."""

    def __init__(self, net: nn.Module, ref: torch.Tensor, cand: torch.Tensor) -> None:
        self.zeros = self._zeros(net)
        self.ref, self.cand = ref, cand

    @staticmethod
    def _zeros(net: nn.Module) -> int:
        return sum(int(p.eq(0).sum()) for p in net.parameters())

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return self.ref if self._zeros(net) == self.zeros else self.cand

    def recalibrate(self, net: nn.Module) -> None:
        pass


def _purify(criterion: str, ref: torch.Tensor, cand: torch.Tensor, max_steps: int = 1
            ) -> tuple[RedundantReport, bool]:  # fmt: skip
    net = _small()
    stub = Stub(net, ref, cand)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    _, report = purify_redundant(net, trace(net, X8), {}, stub, stub.recalibrate, 0.3, max_steps=max_steps,
                                 criterion=criterion)  # fmt: skip
    return report, _same_state(net, start)


def test_a_one_image_net_loss_among_many_discordant_images_is_rejected_by_paired_only() -> None:
    ref, cand = _vectors(N, 440, b=20, c=19)  # 0.2 points net, within 0.3; 39 images changed their answer
    loose, loose_untouched = _purify("tolerance", ref, cand)
    strict, strict_untouched = _purify("paired", ref, cand)
    assert loose.steps[0].accepted and loose.filters + loose.columns > 0 and not loose_untouched
    assert loose.steps[0].drop == loose.steps[0].bound == pytest.approx(0.2)
    assert not strict.steps[0].accepted and strict.filters == strict.columns == 0 and strict_untouched
    assert strict.steps[0].drop == pytest.approx(0.2)
    assert strict.steps[0].bound == pytest.approx(_hand_bound(N, 20, 19), abs=1e-6) and strict.steps[0].bound > 0.3
    assert strict.criterion == "paired" and loose.criterion == "tolerance"


def test_a_candidate_identical_on_every_image_is_accepted_at_every_step() -> None:
    ref, _ = _vectors(N, 450, 0, 0)
    report, _ = _purify("paired", ref, ref.clone(), max_steps=3)
    assert len(report.steps) == 3 and all(s.accepted and s.drop == s.bound == 0.0 for s in report.steps)
    assert report.filters + report.columns > 0 and report.accuracy_after == report.accuracy_before == 0.9


def test_steps_are_judged_against_the_model_before_any_removal() -> None:
    """Each step compares with the reference vector, not with the last accepted step."""
    ref, cand = _vectors(N, 450, b=1, c=0)
    report, _ = _purify("tolerance", ref, cand, max_steps=3)
    assert [s.drop for s in report.steps] == [pytest.approx(0.2)] * 3 and all(s.accepted for s in report.steps)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 2000), data=st.data())
def test_the_paired_bound_is_the_normal_bound_from_the_counts(n: int, data: st.DataObject) -> None:
    b = data.draw(st.integers(0, n))
    c = data.draw(st.integers(0, n - b))
    both = data.draw(st.integers(0, n - b - c))
    ref, cand = _vectors(n, both, b, c, seed=n)
    verdict = paired_drop(ref, cand)
    assert verdict.drop == pytest.approx(100 * (b - c) / n, abs=1e-9)
    assert verdict.bound == pytest.approx(_hand_bound(n, b, c), abs=1e-7)
    assert verdict.bound >= verdict.drop - 1e-9 and mean_drop(ref, cand).drop == pytest.approx(verdict.drop)


def test_a_large_split_with_few_discordant_images_passes_and_no_images_bounds_nothing() -> None:
    assert paired_drop(*_vectors(10_000, 9_000, b=3, c=2)).bound < 0.3
    assert paired_drop(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)).bound == 100.0


def test_the_criterion_is_validated_and_paired_needs_per_image_scores() -> None:
    assert set(CRITERIA) == set(cfgmod.PURIFY_CRITERIA)
    assert cfgmod.resolve("lenet5", None)[0].purify.criterion == "paired"
    with pytest.raises(ConfigError, match="purify.criterion = 'median' is not one of: paired, tolerance"):
        cfgmod.resolve("lenet5", None, {"purify.criterion": "median"})
    net = _small()
    with pytest.raises(ConfigError, match="not one of: paired, tolerance"):
        purify_redundant(net, trace(net, X8), {}, lambda m: 0.9, lambda m: None, 0.3, criterion="median")
    with pytest.raises(TypeError, match="per-image"):
        purify_redundant(net, trace(net, X8), {}, lambda m: 0.9, lambda m: None, 0.3, criterion="paired")
