"""ADMM structured pruning (docs/algorithm.md, "ADMM"), as a controller of the one training loop.

Problem: ``min f(W)`` subject to every layer's weight lying in its structured set ``S_i`` (at most so many
filters / columns non-zero, as the spec asks). With ``Z_i = W_i`` split off, each ADMM iteration is

* W-step: ``epochs_per_iteration`` epochs of SGD on ``f(W) + sum_i rho/2 * ||W_i - Z_i + U_i||_F^2``; the
  penalty goes through autograd (:meth:`Admm.extra_loss`), not as a direct weight step;
* Z-step: ``Z = Pi_S(W + U)`` by :func:`schemes.project` on the tensors ``W + U`` (coupled groups scored over
  every layer they span): the exact Euclidean projection per layer, greedy for ``filter+column``;
* U-step: ``U += W - Z``;
* rho rises geometrically from ``rho_init`` to ``rho_max`` over the iterations, so W is pulled onto the set;
  a constant small rho (as in NNI) leaves a gap that hard pruning then pays for in accuracy. U is the scaled
  dual ``lambda / rho``, so it is rescaled by ``rho_old / rho_new`` when rho rises (Boyd et al. 2011, 3.4.1);
  without that, the dual grows with rho and flips the projection's support onto pruned weights.

Z starts as the projection of W and U at zero, so the first W-step already feels the penalty. Z and U are
copies (never views of the weights). Every iteration logs rho, the training loss, the validation accuracy and
per layer the primal residual ``||W - Z|| / ||W||``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ac_toolchain.config import AdmmConfig
from ac_toolchain.graph import Graph, weight_of
from ac_toolchain.prune.schemes import Masks, project
from ac_toolchain.prune.spec import Spec, rates_and_schemes
from ac_toolchain.train import Controller


@dataclass(frozen=True)
class AdmmSettings:
    iterations: int = 5
    epochs_per_iteration: int = 1
    rho_init: float = 1e-2
    rho_max: float = 1.0

    @classmethod
    def from_config(cls, admm: AdmmConfig) -> AdmmSettings:
        """The ``[admm]`` section's schedule, by name (its ``lr`` goes to the W-step's FitSettings instead)."""
        return cls(iterations=admm.iterations, epochs_per_iteration=admm.epochs_per_iteration,
                   rho_init=admm.rho_init, rho_max=admm.rho_max)  # fmt: skip


def rho_at(iteration: int, s: AdmmSettings) -> float:
    """Geometric schedule: ``rho_init`` in iteration 0, ``rho_max`` in the last one."""
    if s.iterations <= 1:
        return s.rho_max
    return s.rho_init * (s.rho_max / s.rho_init) ** (iteration / (s.iterations - 1))


def hard_prune_masks(graph: Graph, spec: Spec, weights: dict[str, torch.Tensor] | None = None) -> Masks:
    """The masks of ``Pi_S(W)`` (live weights, or the given tensors)."""
    rates, schemes = rates_and_schemes(spec)
    return project(graph, rates, schemes, weights or {})[0]


class Admm(Controller):
    """The penalty, Z-, U- and rho-steps; its state rides in every checkpoint of the training loop."""

    name = "admm"

    def __init__(self, graph: Graph, spec: Spec, settings: AdmmSettings,
                 validate: Callable[[nn.Module], float | None] | None = None) -> None:  # fmt: skip
        self.graph, self.spec, self.settings, self.validate = graph, spec, settings, validate
        self.layers = list(graph.layers)
        w = self._weights()
        self.Z = self._project(w)
        self.U = {k: torch.zeros_like(v) for k, v in w.items()}
        self.iteration = 0
        self.rho = rho_at(0, settings)
        self.log: list[dict[str, Any]] = []

    def _weights(self) -> dict[str, torch.Tensor]:
        return {name: weight_of(self.graph.module(name)) for name in self.layers}

    def _project(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``Pi_S(tensors)`` as new tensors (masked copies)."""
        masks = hard_prune_masks(self.graph, self.spec, {k: v.detach() for k, v in tensors.items()})
        out = {}
        for name, t in tensors.items():
            mask = masks.get(f"{name}.weight")
            z = t.detach().clone()
            out[name] = z * mask.to(z.device, z.dtype) if mask is not None else z
        return out

    def _follow(self, device: torch.device) -> None:
        """Keep Z and U on the weights' device (moved once, not every step)."""
        if self.layers and self.Z[self.layers[0]].device != device:
            self.Z = {k: v.to(device) for k, v in self.Z.items()}
            self.U = {k: v.to(device) for k, v in self.U.items()}

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        w = self._weights()
        if not self.layers:
            return None
        self._follow(w[self.layers[0]].device)
        terms = [(w[k] - self.Z[k] + self.U[k]).square().sum() for k in self.layers]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def end_epoch(self, epoch: int, model: nn.Module, loss: float) -> None:
        if epoch % self.settings.epochs_per_iteration == 0:
            self.update(loss)

    @torch.no_grad()
    def update(self, loss: float = math.nan) -> dict[str, Any]:
        """Z-step, U-step, residuals and the next rho; returns the iteration's log entry."""
        w = {k: v.detach() for k, v in self._weights().items()}
        if self.layers:
            self._follow(w[self.layers[0]].device)
        self.Z = self._project({k: w[k] + self.U[k] for k in self.layers})
        residual = {}
        for k in self.layers:
            gap = w[k] - self.Z[k]
            self.U[k] = self.U[k] + gap
            residual[k] = float(gap.norm() / w[k].norm().clamp_min(1e-12))
        entry = {"iteration": self.iteration + 1, "rho": self.rho, "loss": round(loss, 6),
                 "val_accuracy": self.validate(self.graph.model) if self.validate else None,
                 "residual": residual, "max_residual": max(residual.values(), default=0.0)}  # fmt: skip
        self.log.append(entry)
        self.iteration += 1
        rho = rho_at(min(self.iteration, self.settings.iterations - 1), self.settings)
        self.U = {k: v * (self.rho / rho) for k, v in self.U.items()}  # scaled dual U = lambda / rho: keep lambda
        self.rho = rho
        return entry

    def state(self) -> dict[str, Any]:
        return {"Z": {k: v.cpu() for k, v in self.Z.items()}, "U": {k: v.cpu() for k, v in self.U.items()},
                "rho": self.rho, "iteration": self.iteration, "log": self.log}  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.Z = {k: v.clone() for k, v in state["Z"].items()}
        self.U = {k: v.clone() for k, v in state["U"].items()}
        self.rho, self.iteration, self.log = float(state["rho"]), int(state["iteration"]), list(state["log"])
