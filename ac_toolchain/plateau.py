"""Early stopping on a validation plateau: a training controller for :func:`ac_toolchain.train.fit`.

:class:`Plateau` scores the model after every epoch (validation top-1) and ends the training once ``patience``
epochs have passed without a new best score. On a split of ``images`` images a new best must beat the old one by
more than the split's binomial standard error ``sqrt(p (1 - p) / images)``: a rise smaller than that is noise.
The training keeps its last epoch's weights, not the best epoch's: the maximum of noisy scores is partly luck (an
early epoch a point ahead on 500 validation images can be a point behind on the test split). Its state goes into
fit's checkpoint, so a training cut off and resumed stops at the same epoch as one that ran through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ac_toolchain.train import Controller

Score = Callable[[nn.Module], float | None]  # higher is better; None: nothing to score on (no validation split)


def noise(score: float, images: int) -> float:
    """The binomial standard error of a top-1 of ``score`` measured on ``images`` images (0 for no images)."""
    return math.sqrt(max(score * (1 - score), 0.0) / images) if images > 0 else 0.0


class Plateau(Controller):
    """Stop after ``patience`` epochs without a new best ``score`` (0: never stop early); a new best beats the
    old one by more than its noise on ``images`` images (0: by anything). Without a score every epoch trains."""

    name = "plateau"

    def __init__(self, score: Score, patience: int, images: int = 0) -> None:
        self.score, self.patience, self.images = score, patience, images
        self.epoch = 0  # the last epoch ended
        self.best_epoch = 0
        self.best_score: float | None = None
        self.history: list[float] = []  # the score of every epoch so far

    def end_epoch(self, epoch: int, model: nn.Module, loss: float) -> None:
        self.epoch = epoch
        score = self.score(model)
        if score is None:
            self.best_epoch = epoch
            return
        self.history.append(score)
        if self.best_score is None or score > self.best_score + noise(self.best_score, self.images):
            self.best_epoch, self.best_score = epoch, score

    def stop(self) -> bool:
        return self.patience > 0 and self.best_score is not None and self.epoch - self.best_epoch >= self.patience

    @property
    def last_score(self) -> float | None:
        """The score of the last epoch: the weights training ends with."""
        return self.history[-1] if self.history else None

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "history": list(self.history)}  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:  # a checkpoint written without this controller
            return
        self.epoch, self.best_epoch, self.best_score = state["epoch"], state["best_epoch"], state["best_score"]
        self.history = list(state["history"])
