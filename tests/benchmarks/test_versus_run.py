"""versus_run's paired per-image difference: mean, t-interval and verdict."""

import math

import pytest
import torch
from scipy.stats import t as student_t

from benchmarks.versus_run import paired


def test_paired_difference_is_the_mean_with_its_t_interval() -> None:
    ours = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    peer = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    d = [0, 100, 0, 0, 100, 0, -100, 0, 100, 0]  # points
    mean = sum(d) / 10
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 9)
    half = student_t.ppf(0.975, 9) * sd / math.sqrt(10)
    got = paired(ours, peer)
    assert got["mean"] == pytest.approx(mean, abs=1e-3) and got["images"] == 10
    assert (got["low"], got["high"]) == pytest.approx((mean - half, mean + half), abs=1e-3)
    assert got["verdict"] == "not distinguishable"


def test_verdicts() -> None:
    right, wrong = torch.ones(200, dtype=torch.bool), torch.zeros(200, dtype=torch.bool)
    mixed = torch.arange(200) % 2 == 0
    assert paired(right, mixed)["verdict"] == "ahead"
    assert paired(wrong, mixed)["verdict"] == "behind"
    assert paired(mixed, mixed) == {"mean": 0.0, "low": 0.0, "high": 0.0, "images": 200,
                                    "verdict": "not distinguishable"}  # fmt: skip
