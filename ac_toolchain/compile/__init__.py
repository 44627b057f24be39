"""Compilation with TVM: the target registry here; lowering and export in tvm_build.py and lowering.py."""

from ac_toolchain.compile.targets import TARGETS, Target, get_target

__all__ = ["TARGETS", "Target", "get_target"]
