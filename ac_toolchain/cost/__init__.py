"""The cost of a pruned structure: params and MACs from the graph (analytic.py), latency from measured tables
(latency_model.py). The search, ``ac count`` and the report all use it."""

from ac_toolchain.cost.analytic import Cost, called_modules, masks_cost, plan_cost, structure_cost

__all__ = ["Cost", "called_modules", "masks_cost", "plan_cost", "structure_cost"]
