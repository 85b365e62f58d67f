"""What the accuracy-aware loops report: one record per epoch, a final summary, kept checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EpochRecord:
    """Passed to `on_epoch_end` after every validation (epoch 0 is the validation before training)."""

    epoch: int
    phase: str  # "initial" (the user's schedule) or "search" (adaptive rate search)
    compression_rate_target: float | None
    compression_rate: float | None
    stage: str
    metric: float
    accuracy_budget: float
    loss: float | None
    lr: float | None
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoopStatistics:
    uncompressed_accuracy: float
    compressed_accuracy: float
    compression_rate: float
    absolute_accuracy_degradation: float
    relative_accuracy_degradation: float
    accuracy_budget: float
    result: str  # which kind of checkpoint was returned, see Checkpoints.best()
    epochs: int
    returned_epoch: int | None = None  # the epoch whose checkpoint was returned
    diverged: str | None = None  # why training stopped early on a diverging loss (`divergence.py`)

    def to_str(self) -> str:
        return "\n".join(
            [
                f"Uncompressed model accuracy: {self.uncompressed_accuracy:.4f}",
                f"Compressed model accuracy: {self.compressed_accuracy:.4f}",
                f"Compression rate: {self.compression_rate:.4f}",
                f"Absolute accuracy degradation: {self.absolute_accuracy_degradation:.4f}",
                f"Relative accuracy degradation: {self.relative_accuracy_degradation:.2f}%",
                f"Accuracy budget: {self.accuracy_budget:.4f}",
                f"Returned model: {self.result} (after {self.epochs} training epochs)",
                *([f"Training stopped: {self.diverged}"] if self.diverged else []),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Checkpoint:
    """A model snapshot the loop may return: weights on CPU plus the controller's state."""

    epoch: int
    rate: float
    metric: float
    budget: float
    fully_compressed: bool
    state_dict: dict[str, torch.Tensor]
    ctrl_state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        return cls(**d)


class Checkpoints:
    """The best snapshots so far, by the rule users rely on:

    1. fully compressed within the budget: the highest rate, then the best metric;
    2. else partially compressed within the budget: the highest rate, then the best metric;
    3. else (nothing within the budget) the best metric among fully compressed epochs, or overall.
    Only these three are kept, so memory stays at most three copies of the weights.
    """

    KINDS = ("fully_compressed_within_budget", "partially_compressed_within_budget", "budget_not_met")

    def __init__(self) -> None:
        self.kept: dict[str, Checkpoint] = {}

    @staticmethod
    def _key(kind: str, c: Checkpoint) -> tuple[float, ...]:
        if kind == "budget_not_met":
            return (float(c.fully_compressed), c.metric, -c.epoch)
        return (round(c.rate, 6), c.metric, -c.epoch)

    def offer(
        self,
        model: torch.nn.Module,
        epoch: int,
        rate: float,
        metric: float,
        budget: float,
        fully_compressed: bool,
        ctrl_state: dict[str, Any],
    ) -> None:
        kinds = ["budget_not_met"]
        if budget >= 0:
            kinds.append(self.KINDS[0] if fully_compressed else self.KINDS[1])
        candidate: Checkpoint | None = None
        for kind in kinds:
            probe = Checkpoint(epoch, rate, metric, budget, fully_compressed, {}, {})
            current = self.kept.get(kind)
            if current is None or self._key(kind, probe) > self._key(kind, current):
                if candidate is None:
                    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    candidate = Checkpoint(epoch, rate, metric, budget, fully_compressed, state, ctrl_state)
                self.kept[kind] = candidate

    def best(self) -> tuple[str, Checkpoint] | None:
        for kind in self.KINDS:
            if kind in self.kept:
                return kind, self.kept[kind]
        return None

    def best_within_budget(self) -> Checkpoint | None:
        """The fully compressed checkpoint with the highest rate within the budget (adaptive restarts)."""
        return self.kept.get(self.KINDS[0])

    def to_dict(self) -> dict[str, Any]:
        return {kind: c.to_dict() for kind, c in self.kept.items()}

    def load(self, d: dict[str, Any]) -> None:
        self.kept = {kind: Checkpoint.from_dict(c) for kind, c in d.items()}
