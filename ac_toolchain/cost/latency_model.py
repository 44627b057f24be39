"""Latency tables and the latency cost model: what a compact conv costs on one device, by kept structure.

A conv of the compact model runs on the kernel of ``kernels/`` with ``f`` kept filters, ``c`` kept input channels
and ``k`` kept im2col rows (of ``c * taps``). Its time (or instruction count) is a step function of ``f`` (the
kernel packs filters in blocks of :data:`~ac_toolchain.native.MR`; its register tiles cover whole blocks), close
to linear in ``k``, and the kernel switches paths with the density ``k / (c * taps)`` and with ``k`` itself. So a
table measures, per conv, a grid of cells ``(f, c, k)`` (:func:`grid`):

- ``f``: tile ends (multiples of ``MR``, and ``F``) at a handful of fractions of ``F``, and the first filter of
  each of those tiles (``a - MR + 1``), which measures what a partly filled tile costs;
- ``c``: a handful of fractions of ``C``;
- ``k`` per ``c``: a handful of densities, plus both sides of each of the kernel's path switches
  (:data:`SWITCH_DENSITY`, :data:`SWITCH_ROWS`).

:meth:`LayerTable.predict` interpolates: along ``f`` by tiles (the tile end's value, less the measured within-tile
slope times the filters short of it), along the density ``k / (c * taps)`` and along ``c`` linearly; exact on
grid points. A :class:`LatencyModel` is the tables of every conv plus the rest of the model (everything but the
convs, measured once as the dense model's total less its convs' cells).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ac_toolchain.errors import ConfigError
from ac_toolchain.native import MR

FILTER_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
CHANNEL_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DENSITIES = (0.0625, 0.125, 0.25, 0.6, 1.0)
# The kernel's path switches (kernels/src/compact_conv.cc): NEON / portable builds take the implicit GEMM where
# 5k >= 2 * c * taps; AVX2 builds take the pixel-row path up to 512 kept rows. Cells sit on both sides of each.
SWITCH_DENSITY = 0.4
SWITCH_ROWS = 512


@dataclass(frozen=True)
class ConvGeometry:
    """One conv of the dense model: input [c, h, w], f filters, kernel, stride, padding, dilation."""

    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    dh: int = 1
    dw: int = 1

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def key(self) -> str:
        return ",".join(str(v) for v in asdict(self).values())

    def cell_line(self, f: int, c: int, k: int) -> str:
        """One line of the runner's ``--conv-table`` file: c h w f k kh kw sh sw ph pw dh dw."""
        g = self
        return f"{c} {g.h} {g.w} {f} {k} {g.kh} {g.kw} {g.sh} {g.sw} {g.ph} {g.pw} {g.dh} {g.dw}"


def conv_geometries(model: nn.Module, example: torch.Tensor) -> dict[str, ConvGeometry]:
    """Every conv of the model with its input shape (one forward, eval mode); a ConfigError for a conv the compact
    kernel does not run (grouped, non-zero padding modes, string padding)."""
    found: dict[str, ConvGeometry] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            _check_kernel_conv(name, mod)
            handles.append(mod.register_forward_hook(_recorder(name, found)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return found


def _check_kernel_conv(name: str, mod: nn.Conv2d) -> None:
    if mod.groups != 1 or mod.padding_mode != "zeros" or not isinstance(mod.padding, tuple):
        raise ConfigError(
            f"the latency objective needs every conv on the compact kernel; {name} is a grouped conv or has a "
            "padding the kernel does not take (TVM runs it): use --params-x or --flops-x for this model"
        )


def _recorder(name: str, found: dict[str, ConvGeometry]) -> Any:
    def hook(mod: nn.Conv2d, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        _, c, h, w = args[0].shape
        pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
        found[name] = ConvGeometry(c, h, w, mod.out_channels, *mod.kernel_size, *mod.stride, *pad, *mod.dilation)

    return hook


Cell = tuple[int, int, int]  # (kept filters, kept input channels, kept rows)


def tile_end(f: int, total: int) -> int:
    """The last filter of the packed block that holds filter ``f`` (1-based)."""
    return min(total, -(-f // MR) * MR)


def tile_start(a: int) -> int:
    return (a - 1) // MR * MR + 1


def _filter_nodes(total: int) -> list[int]:
    ends = {tile_end(max(1, round(x * total)), total) for x in FILTER_FRACTIONS} | {tile_end(1, total)}
    return sorted(ends | {tile_start(a) for a in ends})


def _row_nodes(c: int, taps: int) -> list[int]:
    full = c * taps
    switch = math.ceil(SWITCH_DENSITY * full)
    nodes = {max(1, round(d * full)) for d in DENSITIES} | {switch, switch - 1, SWITCH_ROWS, SWITCH_ROWS + 1}
    return sorted(k for k in nodes if 1 <= k <= full)


def grid(geo: ConvGeometry) -> dict[str, Any]:
    """The grid nodes of one conv: filters, channels and the rows of each channel node."""
    channels = sorted({max(1, round(x * geo.c)) for x in CHANNEL_FRACTIONS})
    return {"filters": _filter_nodes(geo.f), "channels": channels,
            "rows": {str(c): _row_nodes(c, geo.taps) for c in channels}}  # fmt: skip


def cells(geo: ConvGeometry) -> list[Cell]:
    g = grid(geo)
    return [(f, c, k) for f in g["filters"] for c in g["channels"] for k in g["rows"][str(c)]]


def _between(nodes: list[float], x: float) -> list[tuple[int, float]]:
    """Linear interpolation weights (index, weight) of ``x`` among sorted ``nodes``; clamped at the ends."""
    if x <= nodes[0] or len(nodes) == 1:
        return [(0, 1.0)]
    if x >= nodes[-1]:
        return [(len(nodes) - 1, 1.0)]
    i = bisect.bisect_right(nodes, x)
    lo, hi = nodes[i - 1], nodes[i]
    t = (x - lo) / (hi - lo)
    return [(i - 1, 1.0 - t), (i, t)]


@dataclass
class LayerTable:
    """The measured cells of one conv and the interpolation between them."""

    geometry: ConvGeometry
    values: dict[Cell, float]
    nodes: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = grid(self.geometry)

    def _filters(self, f: float, c: int, k: int) -> float:
        """Along f by tiles: the tile end's value less the within-tile slope times the filters short of it."""
        total = self.geometry.f
        ends = [a for a in self.nodes["filters"] if a == tile_end(a, total)]
        end = tile_end(max(1, math.ceil(f)), total)
        base = slope = 0.0
        for i, w in _between([float(a) for a in ends], end):
            a, b = ends[i], tile_start(ends[i])
            base += w * self.values[(a, c, k)]
            slope += w * ((self.values[(a, c, k)] - self.values[(b, c, k)]) / (a - b) if a > b else 0.0)
        return base - (end - f) * slope

    def _rows(self, f: float, c: int, density: float) -> float:
        rows = self.nodes["rows"][str(c)]
        full = c * self.geometry.taps
        return sum(w * self._filters(f, c, rows[i]) for i, w in _between([k / full for k in rows], density))

    def predict(self, f: float, c: float, k: float) -> float:
        """The cost of this conv keeping f filters, c input channels and k rows (exact on grid cells)."""
        density = k / (c * self.geometry.taps)
        channels = self.nodes["channels"]
        return sum(w * self._rows(f, channels[i], density) for i, w in _between([float(x) for x in channels], c))

    def dense(self) -> float:
        g = self.geometry
        return self.values[(g.f, g.c, g.c * g.taps)]

    def aligned(self, f: int) -> int:
        """The most filters that cost no more than ``f`` (within the tile of ``f``), by the measured cells: the
        tile end where a part-filled tile costs what a full one does, else ``f``."""
        end = tile_end(f, self.geometry.f)
        g = self.geometry
        dense = (g.c, g.c * g.taps)
        return end if self._filters(end, *dense) <= self._filters(f, *dense) * (1 + ALIGN_TOLERANCE) else f


ALIGN_TOLERANCE = 0.01  # a tile end "costs the same" as f when it costs at most 1 % more


@dataclass
class LatencyModel:
    """Latency tables of every conv of one model on one device, and the measured rest."""

    device: str
    metric: str  # "latency_us" or "instructions"
    unit: str
    fingerprint: dict[str, str]
    layers: dict[str, LayerTable]
    rest: float  # what the model costs besides its convs and the layers without a table ...
    per_mac: float  # ... plus this per multiply-accumulate of those layers (fitted to two measured models)
    total: float  # the dense model's measured total

    def layer(self, name: str, f: float, c: float, k: float) -> float:
        return self.layers[name].predict(f, c, k)

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "metric": self.metric, "unit": self.unit, "fingerprint": self.fingerprint,
                "rest": self.rest, "per_mac": self.per_mac, "total": self.total,
                "layers": {name: {"geometry": asdict(t.geometry),
                                  "cells": [[*cell, v] for cell, v in sorted(t.values.items())]}
                           for name, t in self.layers.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyModel:
        layers = {name: LayerTable(ConvGeometry(**entry["geometry"]), _cells(entry["cells"]))
                  for name, entry in data["layers"].items()}  # fmt: skip
        return cls(data["device"], data["metric"], data["unit"], dict(data["fingerprint"]), layers,
                   float(data["rest"]), float(data["per_mac"]), float(data["total"]))  # fmt: skip


def _cells(rows: Iterable[list[float]]) -> dict[Cell, float]:
    return {(int(f), int(c), int(k)): float(v) for f, c, k, v in rows}
