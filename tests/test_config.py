"""Config: recipe < preset < flags, validation errors that name the key, 1:1 keys and flags."""

from pathlib import Path

import pytest

from ac_toolchain import config as cfgmod
from ac_toolchain.errors import ConfigError


def test_recipe_then_preset_then_flags() -> None:
    cfg, preset = cfgmod.resolve("resnet18", None, {"train.epochs": "7"})
    assert preset == "oneshot"  # the recipe's default_preset
    assert cfg.model.input_shape == (1, 1, 28, 28)  # from the oneshot preset
    assert cfg.train.batch_size == 64  # preset beats the recipe's 128
    assert cfg.train.epochs == 7  # flag beats both
    assert cfg.model.stem == "cifar"  # recipe beats the default


def test_paper_preset_runs_the_papers_algorithm() -> None:
    """`paper`: the search (simulated annealing) in 4 rounds to the recipe's target, ADMM, purification."""
    cfg, preset = cfgmod.resolve("resnet18", "paper")
    assert preset == "paper" and cfg.data.dataset == "cifar10" and cfg.train.epochs == 200
    assert (cfg.search.method, cfg.search.rounds, cfgmod.goals(cfg.search)) == ("anneal", 4, {"params": 50.0})
    assert cfg.prune.method == "admm" and cfg.purify.enabled and cfg.prune.scheme == "filter+column"
    cfgmod.check_search(cfg)


def test_a_command_line_target_or_rate_replaces_the_recipes_target() -> None:
    cfg, _ = cfgmod.resolve("resnet18", "cpu", {"search.flops_x": 8})
    assert cfgmod.goals(cfg.search) == {"flops": 8.0}  # the recipe's params_x = 50 is cleared
    cfg, _ = cfgmod.resolve("resnet18", "cpu", {"search.method": "uniform", "prune.rate": 0.7})
    assert cfgmod.goals(cfg.search) == {} and cfg.prune.rate == 0.7
    with pytest.raises(ConfigError, match="needs a reduction goal"):
        cfgmod.check_search(cfgmod.resolve("resnet18", "cpu", {"prune.rate": 0.7})[0])
    with pytest.raises(ConfigError, match="set one reduction goal"):
        cfgmod.validate(cfgmod.CompressConfig(search=cfgmod.SearchConfig(params_x=5, flops_x=5)))


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("prune.rate", "1.0", "prune.rate = 1.0 is out of range: it must be < 1.0"),
        ("prune.rate", "-0.1", "prune.rate = -0.1 is out of range: it must be >= 0.0"),
        ("train.epochs", "x", "train.epochs = 'x' is not a valid int"),
        ("train.epochs", 2.5, "train.epochs = 2.5 is not a valid int"),
        ("prune.scheme", "rows", "prune.scheme = 'rows' is not one of: filter"),
        ("train.lr", "0", "train.lr = 0.0 is out of range: it must be > 0.0"),
        ("model.input_shape", "2,3,32,32", "must be 1,C,H,W"),
        ("distill.alpha", "1.5", "distill.alpha = 1.5 is out of range: it must be <= 1.0"),
        ("distill.alpha", "-0.5", "distill.alpha = -0.5 is out of range: it must be >= 0.0"),
        ("distill.temperature", "0", "distill.temperature = 0.0 is out of range: it must be > 0.0"),
        ("distill.enabled", "maybe", "distill.enabled = 'maybe' is not a valid bool"),
        ("search.proxy_steps", "-1", "search.proxy_steps = -1 is out of range: it must be >= 0"),
    ],
)
def test_out_of_range_values_name_the_key(key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfgmod.resolve("lenet5", None, {key: value})
    assert needle in str(err.value)


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch' .*did you mean 'train.epochs'"):
        cfgmod.resolve("lenet5", None, {"train.epoch": 3})


def test_unknown_key_in_a_recipe_file(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[model]\narch = "lenet5"\n[train]\nepohcs = 3\n')
    with pytest.raises(ConfigError, match=r"unknown key 'train.epohcs' in .*bad.toml"):
        cfgmod.resolve(str(recipe))


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'.*presets: cpu, oneshot, paper, smoke"):
        cfgmod.resolve("lenet5", "fast")


def test_fractions_must_leave_training_data() -> None:
    with pytest.raises(ConfigError, match=r"val_fraction \+ data.test_fraction must be < 1"):
        cfgmod.resolve("lenet5", None, {"data.val_fraction": 0.5, "data.test_fraction": 0.5})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    recipe = tmp_path / "broken.toml"
    recipe.write_text("[model\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        cfgmod.resolve(str(recipe))


def test_saved_config_round_trips_and_reruns(tmp_path: Path) -> None:
    cfg, _ = cfgmod.resolve("vgg16", "smoke", {"prune.rate": 0.75})
    cfgmod.save(cfg, tmp_path / "config.toml")
    assert cfgmod.load(tmp_path / "config.toml") == cfg
    again, _ = cfgmod.resolve(str(tmp_path / "config.toml"))  # a resolved config is itself a recipe
    assert again == cfg


def test_keys_and_flags_are_one_to_one() -> None:
    fields = cfgmod.option_fields()
    keys = {cfgmod.key_of(s, f) for s, f in fields}
    flags = {cfgmod.flag_of(s, f) for s, f in fields}
    assert len(keys) == len(flags) == len(fields)
    assert {"--data", "--target", "--device", "--input-shape", "--dense", "--search"} <= flags


@pytest.mark.parametrize("recipe", sorted(p.stem for p in cfgmod.RECIPES_DIR.glob("*.toml")))
def test_every_shipped_recipe_and_preset_resolves(recipe: str) -> None:
    presets = cfgmod.preset_names(cfgmod.read_toml(cfgmod.RECIPES_DIR / f"{recipe}.toml"))
    assert {"smoke", "cpu", "paper"} <= set(presets)
    for preset in presets:
        cfg, _ = cfgmod.resolve(recipe, preset)
        assert cfg.model.arch == recipe
        cfgmod.check_search(cfg)  # every shipped preset runs the search with a target



def test_distillation_and_the_proxy_fine_tune_are_off_by_default_and_on_in_every_smoke_preset() -> None:
    cfg, _ = cfgmod.resolve("lenet5", "cpu")
    assert not cfg.distill.enabled and cfg.search.proxy_steps == 0
    assert (cfg.distill.alpha, cfg.distill.temperature) == (0.5, 4.0)
    for recipe in sorted(p.stem for p in cfgmod.RECIPES_DIR.glob("*.toml")):
        cfg, _ = cfgmod.resolve(recipe, "smoke")
        assert cfg.distill.enabled and cfg.search.proxy_steps == 2, recipe
    flags = {"distill.enabled": "false", "distill.alpha": "1", "distill.temperature": "2"}
    cfg, _ = cfgmod.resolve("lenet5", "smoke", flags)
    assert (cfg.distill.enabled, cfg.distill.alpha, cfg.distill.temperature) == (False, 1.0, 2.0)


def test_lenet5s_default_is_one_uniform_round_of_one_shot_pruning_with_distillation_for_the_cpu_chains_epochs() -> None:
    cfg, preset = cfgmod.resolve("lenet5", None)
    chain, _ = cfgmod.resolve("lenet5", "cpu")
    assert preset == "oneshot"
    got = (cfg.search.method, cfg.search.rounds, cfg.prune.method, cfg.distill.enabled, cfg.purify.criterion)
    assert got == ("uniform", 1, "oneshot", True, "paired")
    cpu_epochs = chain.search.rounds * (chain.admm.iterations * chain.admm.epochs_per_iteration
                                        + chain.prune.finetune_epochs)  # fmt: skip
    assert cfg.prune.finetune_epochs == cpu_epochs  # the same training budget as the cpu chain
