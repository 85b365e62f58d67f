"""Telling a diverging loss from a large one: a loss that becomes NaN or infinite, or grows past
`EXPLOSION_FACTOR` times its first value (times 1 when the first value is below 1), has diverged.
Training on would only spend epochs (and a "succeeded" job would hide it), so the loops stop and
return the best checkpoint they already have.

The factor is relative because losses have no common scale (a regression on raw targets starts in the
millions); 1e4 is far above the noise of a healthy run (a cross-entropy starts near ln(classes) and a
bad batch rarely costs 10x), and far below what a too-high learning rate reaches (1e23 was seen).
"""

from __future__ import annotations

import math

from squeezer.errors import TrainingDiverged

EXPLOSION_FACTOR = 1e4


class LossWatch:
    """Feed it every loss of a run (per batch or per epoch); it raises `TrainingDiverged` once it diverges."""

    def __init__(self, factor: float = EXPLOSION_FACTOR) -> None:
        self.factor = factor
        self.reference: float | None = None  # the first finite loss, in absolute value

    def check(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(epoch, loss, self.reference)
        if self.reference is None:
            self.reference = abs(loss)
        elif abs(loss) > self.factor * max(self.reference, 1.0):  # a near-zero first loss may grow to O(1)
            raise TrainingDiverged(epoch, loss, self.reference)
