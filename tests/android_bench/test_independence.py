"""android_bench is a standalone harness that ac_toolchain drives: none of its modules imports ac_toolchain, and
its DeviceError is the one the toolchain re-exports."""

from __future__ import annotations

import ast
from pathlib import Path

import ac_toolchain.errors
import android_bench.errors

PACKAGE = Path(android_bench.errors.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_android_bench_module_imports_ac_toolchain() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) > 10
    offenders = {f.name: sorted(m for m in _imports(f) if m.split(".")[0] == "ac_toolchain") for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_toolchain_re_exports_the_harness_error() -> None:
    assert ac_toolchain.errors.DeviceError is android_bench.errors.DeviceError
    assert android_bench.errors.DeviceError in ac_toolchain.errors.USER_ERRORS
