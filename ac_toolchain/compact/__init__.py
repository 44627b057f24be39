"""Physical removal of pruned structures."""

from ac_toolchain.compact.compactor import Shrunk, compact, expand_columns, shrink
from ac_toolchain.compact.modules import CompactConv2d, GatherLinear

__all__ = ["CompactConv2d", "GatherLinear", "Shrunk", "compact", "expand_columns", "shrink"]
