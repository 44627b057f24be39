"""The search over per-layer rates and schemes: the space (space.py), the quick evaluation (proxy.py) and
simulated annealing (anneal.py). Costs come from ac_toolchain/cost/."""
