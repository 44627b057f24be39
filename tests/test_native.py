"""Native build cache keys: what goes into a build, and nothing else, names its folder."""

import shutil
from pathlib import Path

import pytest

from ac_toolchain import native


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the native source folders, put in place of the real ones."""
    copies = []
    for d in native.NATIVE_DIRS:
        copy = tmp_path / d.relative_to(native.ROOT)
        shutil.copytree(d, copy)
        copies.append(copy)
    monkeypatch.setattr(native, "KERNELS", copies[0])
    monkeypatch.setattr(native, "RUNNER", copies[1])
    monkeypatch.setattr(native, "NATIVE_DIRS", tuple(copies))
    return tmp_path


def test_a_kernel_change_rebuilds_the_kernels_but_not_the_runner_core(tree: Path) -> None:
    before = {runner: native.build_dir("host", runner) for runner in (False, True)}
    with (tree / "kernels" / "src" / "compact_conv.cc").open("a") as fh:
        fh.write("// changed\n")
    assert native.build_dir("host", False) != before[False]
    assert native.build_dir("host", True) == before[True]


def test_a_runner_change_rebuilds_the_runner_core(tree: Path) -> None:
    before = native.build_dir("aarch64", True)
    with (tree / "android_bench" / "runner" / "main.cc").open("a") as fh:
        fh.write("// changed\n")
    assert native.build_dir("aarch64", True) != before
    assert native.build_dir("host", True) != native.build_dir("aarch64", True)


def test_the_qemu_device_counts_with_the_plugin_built_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # android_bench does not import the toolchain: importing native registers where the plugin comes from
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed")
    from android_bench.qemu import QemuDevice

    monkeypatch.setattr(native, "build", lambda kind: tmp_path / kind)
    assert QemuDevice().plugin() == tmp_path / "host" / "libac_qemu_insn.so"
