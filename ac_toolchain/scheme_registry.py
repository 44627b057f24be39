"""The pruning schemes: the one list of their names, which the search may choose, their plot colours and the
default. Torch-free, so the config and the CLI import it without loading torch; each scheme's projection rule
is registered against these names in ac_toolchain/prune/schemes.py (``SCHEME_RULES``).
"""

from __future__ import annotations

from dataclasses import dataclass

FILTER, CHANNEL, COLUMN, FILTER_COLUMN = "filter", "channel", "column", "filter+column"


@dataclass(frozen=True)
class Scheme:
    name: str
    what: str  # what it removes, for help texts and docs
    searchable: bool  # whether the search may give it to a layer ("channel" is for `ac prune` only)
    colour: str  # in the report's plots


REGISTRY: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(FILTER, "whole filters (output channels) and what they feed", True, "#47a"),
        Scheme(CHANNEL, "whole input channels and the filters that make them", False, "#6a3"),
        Scheme(COLUMN, "GEMM columns (one input channel at one kernel position) of every filter", True, "#c83"),
        Scheme(FILTER_COLUMN, "filters, then columns of the filters left (the rate split between them)", True,
               "#a33"),
    )
}  # fmt: skip
SCHEMES = tuple(REGISTRY)
SEARCH_SCHEMES = tuple(name for name, s in REGISTRY.items() if s.searchable)
DEFAULT_SCHEME = FILTER_COLUMN  # what every recipe in models/ uses
