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

Why not Optuna's pruners: the candidates are a short fixed list, not samples from a space, so its
samplers would go unused; its pruners rank raw values and know nothing of the accuracy budget or of
compression; and its storage would be a second database schema next to the job rows, which already
hold every epoch's metric and compression rate. The rule itself is these few lines over those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HalvingRule:
    rate: int = 2
    min_reports: int = 2  # at a rung with fewer reports than this, nobody is stopped (nothing to compare)

    def is_rung(self, epoch: int) -> bool:
        rung = 1
        while rung < epoch:
            rung *= self.rate
        return epoch >= 1 and rung == epoch

    def should_stop(
        self, name: str, epoch: int, margins: Mapping[str, float], rates: Mapping[str, float | None] | None = None
    ) -> bool:
        """Whether candidate `name`, reporting `epoch`, stops. `margins` holds the accuracy margin
        (metric minus the budget's floor; >= 0 is within the budget) of every candidate that has
        reported `epoch`, `name` included; `rates` their compression rates there (None: not known,
        taken as 0). Without `rates`, every candidate competes with every other."""
        if not self.is_rung(epoch) or margins[name] >= 0:
            return False
        own = (rates or {}).get(name) or 0.0
        rivals = {n: m for n, m in margins.items() if rates is None or (rates.get(n) or 0.0) >= own - 1e-9}
        if len(rivals) < self.min_reports:
            return False
        keep = max(1, len(rivals) // self.rate)
        ranked = sorted(rivals, key=lambda n: (-rivals[n], n))
        return name not in ranked[:keep]
