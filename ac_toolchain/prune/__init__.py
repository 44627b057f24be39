"""Pruning: the uniform L1 filter baseline now; schemes, ADMM and purification arrive with later issues."""

from ac_toolchain.prune.uniform import LayerPrune, uniform_filter_prune

__all__ = ["LayerPrune", "uniform_filter_prune"]
