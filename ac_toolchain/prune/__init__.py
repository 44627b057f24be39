"""Structured pruning: schemes and the projection, per-layer specs; ADMM (``admm.py``)
and purification (``purify.py``) are imported from their modules (ADMM builds on the training loop)."""

from ac_toolchain.prune.schemes import SCHEMES, LayerPlan, kept_count, plan_pruning, project, prune
from ac_toolchain.prune.spec import LayerSpec, Spec, load_spec, uniform_spec

__all__ = [
    "SCHEMES", "LayerPlan", "LayerSpec", "Spec", "kept_count", "load_spec", "plan_pruning", "project", "prune",
    "uniform_spec",
]  # fmt: skip
