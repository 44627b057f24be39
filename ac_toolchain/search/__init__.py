"""The search package: the analytic cost of a pruned structure lives here (``cost``); the search over
per-layer rates and schemes arrives with the search issue."""

from ac_toolchain.search.cost import Cost, called_modules, masks_cost, plan_cost, structure_cost

__all__ = ["Cost", "called_modules", "masks_cost", "plan_cost", "structure_cost"]
