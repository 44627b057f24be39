"""Physical removal of pruned structures."""

from ac_toolchain.compact.compactor import compact, expand_columns
from ac_toolchain.compact.modules import CompactConv2d, GatherLinear

__all__ = ["CompactConv2d", "GatherLinear", "compact", "expand_columns"]
