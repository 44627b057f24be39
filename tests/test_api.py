"""The public verbs stay verbs whatever was imported first (four of them share a name with a subpackage)."""

import subprocess
import sys

import pytest


def test_verbs_survive_importing_their_subpackages_first() -> None:
    code = (
        "import ac_toolchain.prune.schemes, ac_toolchain.compact.compactor, ac_toolchain.count, ac_toolchain.compress\n"
        "import ac_toolchain as ac\n"
        "print(all(callable(getattr(ac, v)) and not isinstance(getattr(ac, v), type(ac))"
        " for v in ('prune', 'compact', 'count', 'compress')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_unknown_attribute_is_an_attribute_error() -> None:
    import ac_toolchain as ac

    with pytest.raises(AttributeError, match="no_such_verb"):
        ac.no_such_verb  # noqa: B018


def test_every_lazy_verb_is_public_and_resolves() -> None:
    import ac_toolchain as ac

    assert set(ac._VERBS) <= set(ac.__all__)
    assert all(callable(getattr(ac, name)) for name in ac._VERBS)


def test_compress_refuses_cuda_only_training_options_on_cpu_before_the_run_directory(tmp_path) -> None:
    import ac_toolchain as ac
    from ac_toolchain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.amp = bf16 .*CUDA only, but the device is cpu"):
        ac.compress("lenet5", "smoke", {"train.amp": "bf16", "run.device": "cpu", "run.runs_dir": str(tmp_path)})
    assert not list(tmp_path.iterdir())
