"""Rates files: the format the search writes; every bad file is one clear error naming the problem."""

import json
from pathlib import Path

import pytest

from ac_toolchain.errors import ConfigError
from ac_toolchain.prune.spec import LayerSpec, load_spec, spec_to_json, uniform_spec

LAYERS = ["conv1", "conv2", "fc1"]


def _file(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "rates.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def test_a_spec_round_trips_through_its_json() -> None:
    spec = {"conv1": LayerSpec(0.25, "column"), "fc1": LayerSpec(0.9, "filter+column")}
    assert json.loads(spec_to_json(spec)) == {"conv1": {"rate": 0.25, "scheme": "column"},
                                              "fc1": {"rate": 0.9, "scheme": "filter+column"}}  # fmt: skip


def test_uniform_spec_covers_every_layer() -> None:
    assert uniform_spec(LAYERS, 0.5, "filter") == dict.fromkeys(LAYERS, LayerSpec(0.5, "filter"))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"conv9": {"rate": 0.5, "scheme": "filter"}}, "unknown layer(s) ['conv9']; prunable layers: conv1, conv2"),
        ({"conv1": {"rate": 1.0, "scheme": "filter"}}, "rate 1.0 of layer 'conv1' is out of range"),
        ({"conv1": {"rate": -0.2}}, "rate -0.2 of layer 'conv1' is out of range"),
        ({"conv1": {"rate": 0.5, "scheme": "rows"}}, "scheme 'rows' of layer 'conv1' is not one of: filter, channel"),
        ({"conv1": 0.5}, """layer 'conv1' must be {"rate": R, "scheme": S}"""),
        ({"conv1": {"rate": 0.5, "sheme": "filter"}}, "layer 'conv1' must be"),
        ([], "expected a JSON object"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_bad_rates_file_is_one_clear_error(tmp_path: Path, body: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(_file(tmp_path, body), LAYERS)
    assert needle in str(err.value) and "rates.json" in str(err.value)


def test_missing_rates_file_says_what_flag_wanted_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--prune-rates expects a JSON file"):
        load_spec(tmp_path / "nope.json")
