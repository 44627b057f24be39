"""The docs keep up with the code: every config key in docs/config.md, the README short and starting with the two
commands that CI runs."""

import re
from pathlib import Path

from ac_toolchain import config as cfgmod

ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = (
    "bash scripts/install-system-deps.sh && pip install torch==2.13.0 && pip install -e . && "
    "ac compress resnet18 --target arm64"
)
TESTS = (
    "bash scripts/install-system-deps.sh && pip install torch==2.13.0 && pip install -e '.[dev]' && ruff check . && "
    "mypy && python -m pytest -m 'not slow' -q --durations=15"
)


def code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


def test_every_config_key_and_flag_is_in_the_config_reference() -> None:
    rows = {line.split("|")[1].strip() + "|" + line.split("|")[2].strip()
            for line in (ROOT / "docs" / "config.md").read_text().splitlines() if line.startswith("| `")}  # fmt: skip
    missing = [f"{cfgmod.key_of(s, f)} ({cfgmod.flag_of(s, f)})" for s, f in cfgmod.option_fields()
               if f"`{cfgmod.key_of(s, f)}`|`{cfgmod.flag_of(s, f)}`" not in rows]  # fmt: skip
    assert not missing, f"docs/config.md lacks a row '| `key` | `--flag` | ...' for: {', '.join(missing)}"


def test_readme_is_short_and_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert code_blocks(text)[:2] == [MAIN_JOB, TESTS]


def test_ci_runs_the_readmes_test_command() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert TESTS in lines
