"""Per-layer pruning targets: ``{"layer": {"rate": r, "scheme": s}, ...}``.

This is the format of ``--prune-rates FILE`` and of each round's ``rates.json``; the search writes it too (a
layer without ``"scheme"`` gets ``filter+column``). A single rate and scheme (``prune.rate`` /
``prune.scheme``) expand to the same spec over every prunable layer, convs and linears alike (the classifier
loses only input columns: its outputs are the model's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ac_toolchain.errors import ConfigError
from ac_toolchain.scheme_registry import DEFAULT_SCHEME, SCHEMES


@dataclass(frozen=True)
class LayerSpec:
    rate: float
    scheme: str


Spec = dict[str, LayerSpec]


def uniform_spec(layers: list[str], rate: float, scheme: str) -> Spec:
    return {name: LayerSpec(rate, scheme) for name in layers}


def rates_and_schemes(spec: Spec) -> tuple[dict[str, float], dict[str, str]]:
    """The two per-layer dicts the scheme rules take."""
    return {k: v.rate for k, v in spec.items()}, {k: v.scheme for k, v in spec.items()}


def _entry(origin: str, name: str, body: object) -> LayerSpec:
    if not isinstance(body, dict) or set(body) - {"rate", "scheme"} or "rate" not in body:
        raise ConfigError(f'{origin}: layer \'{name}\' must be {{"rate": R, "scheme": S}}, got {body!r}')
    rate, scheme = body["rate"], body.get("scheme", DEFAULT_SCHEME)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"{origin}: rate {rate!r} of layer '{name}' is out of range: rates are in [0, 1)")
    if scheme not in SCHEMES:
        raise ConfigError(f"{origin}: scheme {scheme!r} of layer '{name}' is not one of: {', '.join(SCHEMES)}")
    return LayerSpec(float(rate), str(scheme))


def parse_spec(data: object, origin: str, layers: list[str] | None = None) -> Spec:
    """Validate a decoded rates file; ``layers`` (the model's prunable layers) catches unknown names."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f'{origin}: expected a JSON object {{"layer": {{"rate": R, "scheme": S}}, ...}}')
    spec = {str(name): _entry(origin, str(name), body) for name, body in data.items()}
    unknown = [name for name in spec if layers is not None and name not in layers]
    if unknown:
        raise ConfigError(f"{origin}: unknown layer(s) {unknown}; prunable layers: {', '.join(layers or [])}")
    return spec


def load_spec(path: str | Path, layers: list[str] | None = None) -> Spec:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"rates file {path} not found (--prune-rates expects a JSON file)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"rates file {path} is not valid JSON: {exc}") from None
    return parse_spec(data, str(path), layers)


def spec_to_json(spec: Spec) -> str:
    return json.dumps({k: {"rate": round(v.rate, 6), "scheme": v.scheme} for k, v in spec.items()}, indent=2) + "\n"
