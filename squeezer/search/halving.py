"""When a search stops a candidate early: asynchronous successive halving (ASHA) on the accuracy margin.

Rungs are the epochs 1, r, r², ... (r = `rate`). A candidate that reports a rung epoch is compared with
every candidate that has reported that epoch so far (ASHA's asynchronous rule: nobody waits for the
slowest). It goes on if it is within the accuracy budget, or if its margin to the budget is among the
best 1/r of them; otherwise it stops. A candidate within the budget is never stopped: it may be the
recommendation, and its Early Exit loop ends it soon anyway. One that ranks low while still below the
budget is the one that cannot become the recommendation within its epochs as the others will.

Why not Optuna's pruners: the candidates are a short fixed list, not samples from a space, so its
samplers would go unused; its pruners rank raw values and know nothing of the accuracy budget; and its
storage would be a second database schema next to the job rows, which already hold every epoch's
metric. The rule itself is these few lines over those rows.
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

    def should_stop(self, name: str, epoch: int, margins: Mapping[str, float]) -> bool:
        """Whether candidate `name`, reporting `epoch`, stops. `margins` holds the accuracy margin
        (metric minus the budget's floor; >= 0 is within the budget) of every candidate that has
        reported `epoch`, `name` included."""
        if not self.is_rung(epoch) or margins[name] >= 0 or len(margins) < self.min_reports:
            return False
        keep = max(1, len(margins) // self.rate)
        ranked = sorted(margins, key=lambda n: (-margins[n], n))
        return name not in ranked[:keep]
