"""When a search stops a candidate early: asynchronous successive halving (ASHA) on the accuracy margin,
among the candidates that are compressed at least as much.

Rungs are the epochs 1, r, r², ... (r = `rate`). A candidate that reports a rung epoch is compared with
the candidates that have reported that epoch so far (ASHA's asynchronous rule: nobody waits for the
slowest) and whose compression rate is at least its own. It goes on if it is within the accuracy
budget, or if its margin to the budget is among the best 1/r of them; otherwise it stops.

- A candidate within the budget is never stopped: it may be the recommendation, and its Early Exit
  loop ends it soon anyway.
- A candidate is only outranked by candidates at least as compressed. Plain successive halving
  ranked everyone on accuracy alone, and on the digits CNN it stopped 50%-pruned INT8 at epoch 1
  (90.0% against INT8's 98.0%): the lightly compressed candidates are always ahead early, and the
  strongly compressed ones that recover later (97.8% at epoch 4, within the budget, the smallest
  model) are exactly what a search is for. A more accurate candidate that is also at least as
  compressed does make a candidate hopeless for the front.
- A candidate is first judged after `grace_epochs` epochs of training: pruning and sparsity start at
  their target level and need an epoch or two to recover. `pruning30_int8` was stopped at epoch 1 at
  93.45%, 0.01 under the floor, in a search where it would likely have been the best.
- A candidate that is still improving and one more epoch at its last gain would take into the budget
  is not stopped: it is just under the floor, not behind.

Why not Optuna's pruners: the candidates are a short fixed list, not samples from a space, so its
samplers would go unused; its pruners rank raw values and know nothing of the accuracy budget or of
compression; and its storage would be a second database schema next to the job rows, which already
hold every epoch's metric and compression rate. The rule itself is these few lines over those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GRACE_EPOCHS = 2  # epochs of training before a candidate can be stopped: pruning's recovery


@dataclass(frozen=True)
class HalvingRule:
    rate: int = 2
    min_reports: int = 2  # at a rung with fewer reports than this, nobody is stopped (nothing to compare)
    grace_epochs: int = GRACE_EPOCHS

    def is_rung(self, epoch: int) -> bool:
        rung = 1
        while rung < epoch:
            rung *= self.rate
        return epoch >= 1 and rung == epoch

    def judges(self, epoch: int) -> bool:
        """Whether a candidate can be stopped at `epoch`: a rung past its grace period."""
        return epoch >= max(1, self.grace_epochs) and self.is_rung(epoch)

    def verdict(
        self,
        name: str,
        epoch: int,
        margins: Mapping[str, float],
        rates: Mapping[str, float | None] | None = None,
        previous: float | None = None,
    ) -> str | None:
        """Why candidate `name`, reporting `epoch`, stops; None when it goes on. `margins` holds the accuracy
        margin (metric minus the budget's floor; >= 0 is within the budget) of every candidate that has
        reported `epoch`, `name` included; `rates` their compression rates there (None: not known, taken
        as 0); `previous` its own margin at the epoch before (None: not known). Without `rates`, every
        candidate competes with every other."""
        margin = margins[name]
        if not self.judges(epoch) or margin >= 0 or _closing_in(margin, previous):
            return None
        own = (rates or {}).get(name) or 0.0
        rivals = {n: m for n, m in margins.items() if rates is None or (rates.get(n) or 0.0) >= own - 1e-9}
        if len(rivals) < self.min_reports:
            return None
        keep = max(1, len(rivals) // self.rate)
        ranked = sorted(rivals, key=lambda n: (-rivals[n], n))
        if name in ranked[:keep]:
            return None
        return (
            f"successive halving at epoch {epoch}: {margin:+.3g} from the accuracy budget, rank "
            f"{ranked.index(name) + 1} of the {len(rivals)} candidates there compressed at least as much "
            f"(the best {keep} go on)"
        )

    def should_stop(
        self,
        name: str,
        epoch: int,
        margins: Mapping[str, float],
        rates: Mapping[str, float | None] | None = None,
        previous: float | None = None,
    ) -> bool:
        """Whether `verdict` stops the candidate."""
        return self.verdict(name, epoch, margins, rates, previous) is not None


def _closing_in(margin: float, previous: float | None) -> bool:
    """Whether a candidate under the floor is improving by at least its distance to it each epoch: one
    more epoch at the gain of its last would take it into the budget."""
    return previous is not None and margin > previous and margin + (margin - previous) >= 0
