"""Structured pruning: schemes and projections, the uniform baseline; ADMM and purification come later."""

from ac_toolchain.prune.schemes import SCHEMES, LayerPlan, kept_count, plan_pruning, prune
from ac_toolchain.prune.uniform import uniform_prune

__all__ = ["SCHEMES", "LayerPlan", "kept_count", "plan_pruning", "prune", "uniform_prune"]
