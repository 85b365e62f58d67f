"""Early Exit: train with the user's schedule and stop at the first fully compressed epoch within the
accuracy budget; and plain fine-tuning for a fixed number of epochs, which is Early Exit that never exits.
"""

from __future__ import annotations

import logging
from typing import Any

from squeezer.compression.accuracy_aware.base import TrainingLoop
from squeezer.compression.config.models import EarlyExitConfig, EarlyExitParams
from squeezer.compression.controller import CompressionController, CompressionStage

logger = logging.getLogger(__name__)


class EarlyExitLoop(TrainingLoop):
    """Train with the user's schedule; stop at the first fully compressed epoch within the budget."""

    mode = "early_exit"

    def train(self) -> None:
        self.early_exit_phase(self.params.maximal_total_epochs)

    def criterion_met(self) -> bool:
        return (
            self.budget(self.current_val_metric_value) >= 0
            and self.ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
        )

    def early_exit_phase(self, max_epochs: int) -> None:
        while not self.criterion_met() and self.cumulative_epoch_count < max_epochs:
            self.train_epoch()
            self.validate()
            self.record_epoch()
            if self.criterion_met():
                logger.info("reached the accuracy criterion after epoch %d", self.cumulative_epoch_count)
            elif self.stop_training():
                logger.info("training stopped: early stopping criterion satisfied")
                self.end_of_epoch()
                break
            else:
                self.update_learning_rate()
            self.end_of_epoch()


class FixedEpochsLoop(EarlyExitLoop):
    """Plain fine-tuning for `epochs` epochs with the same records, checkpoints and resumable state.

    The budget is "no worse than uncompressed", so `statistics.result` tells whether it was matched;
    the returned model follows the same rule as the other loops.
    """

    def __init__(
        self, epochs: int, ctrl: CompressionController, uncompressed_model_accuracy: float, **options: Any
    ) -> None:
        section = EarlyExitConfig(
            mode="early_exit",
            params=EarlyExitParams(maximal_absolute_accuracy_degradation=0.0, maximal_total_epochs=epochs),
        )
        super().__init__(section, ctrl, uncompressed_model_accuracy, **options)

    def criterion_met(self) -> bool:
        return False
