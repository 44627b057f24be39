"""The one scheme registry (ac_toolchain/scheme_registry.py): every scheme has a projection rule, a colour and a
searchable flag; the config, the projection, the search and the plots take their lists from it; and no other
module spells a scheme name out."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

import ac_toolchain
from ac_toolchain import config as cfgmod
from ac_toolchain.prune.schemes import SCHEME_RULES
from ac_toolchain.scheme_registry import DEFAULT_SCHEME, REGISTRY, SCHEMES, SEARCH_SCHEMES

PACKAGE = Path(ac_toolchain.__file__).parent
ROOT = PACKAGE.parent


def test_every_scheme_has_a_rule_a_colour_and_the_lists_come_from_the_registry() -> None:
    assert list(SCHEME_RULES) == list(SCHEMES) == list(REGISTRY)
    assert len({s.colour for s in REGISTRY.values()}) == len(REGISTRY)
    assert set(SEARCH_SCHEMES) < set(SCHEMES) and "channel" not in SEARCH_SCHEMES
    field = next(f for s, f in cfgmod.option_fields() if (s, f.name) == ("prune", "scheme"))
    assert field.metadata["choices"] == SCHEMES and cfgmod.CompressConfig().prune.scheme == DEFAULT_SCHEME


def test_the_default_is_what_every_recipe_uses() -> None:
    for recipe in sorted((ROOT / "models").glob("*.toml")):
        assert tomllib.loads(recipe.read_text())["prune"]["scheme"] == DEFAULT_SCHEME, recipe.name


def test_no_other_module_spells_a_scheme_name() -> None:
    names = "|".join(re.escape(n) for n in sorted(SCHEMES, key=len, reverse=True))
    spelled = re.compile(rf'"(?:{names})"')
    hits = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
            if p.name != "scheme_registry.py" and spelled.search(p.read_text().replace('kind == "filter"', ""))}
    # purify.py names its own candidate kinds "filter" / "column" (rows and GEMM columns, not schemes)
    assert hits <= {"prune/purify.py"}, hits
