"""Compilation with TVM. Only the target registry exists yet; lowering arrives with the compile issue."""

from ac_toolchain.compile.targets import TARGETS, Target, get_target

__all__ = ["TARGETS", "Target", "get_target"]
