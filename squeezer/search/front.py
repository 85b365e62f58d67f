"""The Pareto front over accuracy and measured cost, and the recommended candidate.

Only candidates that finished with a measured latency and size take part: a stopped or failed
candidate has no exported model to deploy. The front is over every finished candidate (a faster
model outside the accuracy budget is still a trade-off worth showing); the recommendation is the
best within the budget.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from squeezer.search.result import CandidateOutcome
from squeezer.search.spec import Objective


def _measured(outcome: CandidateOutcome) -> bool:
    return (
        outcome.status == "succeeded"
        and outcome.metric is not None
        and outcome.latency_ms is not None
        and outcome.size_bytes is not None
    )


def _costs(outcome: CandidateOutcome, objective: Objective) -> tuple[float, ...]:
    """Lower is better in every place: minus the metric, then the objective's costs."""
    assert outcome.metric is not None and outcome.latency_ms is not None and outcome.size_bytes is not None
    latency, size = float(outcome.latency_ms), float(outcome.size_bytes)
    costs = {"latency": (latency,), "size": (size,), "both": (latency, size)}[objective]
    return (-float(outcome.metric), *costs)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _score(outcome: CandidateOutcome, objective: Objective) -> float:
    """The objective as one number, lower is better; `both` is the geometric mean of latency and size
    (a model twice as fast and twice as large ties with the original)."""
    assert outcome.latency_ms is not None and outcome.size_bytes is not None
    if objective == "latency":
        return float(outcome.latency_ms)
    if objective == "size":
        return float(outcome.size_bytes)
    return math.sqrt(float(outcome.latency_ms) * float(outcome.size_bytes))


def pareto_front(outcomes: Sequence[CandidateOutcome], objective: Objective) -> list[str]:
    """Names of the measured candidates no other measured candidate dominates (at least as good in the
    metric and every cost, better in one), ordered by the objective."""
    points = [(o, _costs(o, objective)) for o in outcomes if _measured(o)]
    front = [o for o, c in points if not any(_dominates(other, c) for _, other in points)]
    return [o.name for o in sorted(front, key=lambda o: _score(o, objective))]


def recommend(outcomes: Sequence[CandidateOutcome], objective: Objective) -> str | None:
    """The measured candidate within the accuracy budget with the best objective (ties: higher metric)."""
    eligible = [o for o in outcomes if _measured(o) and o.within_budget]
    if not eligible:
        return None
    return min(eligible, key=lambda o: (_score(o, objective), -float(o.metric or 0.0))).name


def common_latency_scale(outcomes: Sequence[CandidateOutcome]) -> None:
    """Put every measured candidate's latency on one scale, in place: the median FP32 latency over the
    candidates divided by the candidate's own speedup over FP32.

    Candidates are timed on different workers, at different moments, while other candidates train:
    on the digits CNN the same INT8 file measured 15.8 ms in one search and 46.4 ms in another. Each
    candidate's speedup is measured against the FP32 model in alternating calls, so whatever slowed
    one slowed the other alike, and the ratio is what can be compared across candidates (the median
    of the pairs' ratios where the worker reports it: steadier than the ratio of the medians). The raw
    timings stay in `measured_latency_ms` / `measured_fp32_latency_ms`."""
    measured = [o for o in outcomes if o.measured_latency_ms and o.measured_fp32_latency_ms]
    if not measured:
        return
    reference = statistics.median(float(o.measured_fp32_latency_ms or 0.0) for o in measured)
    for o in measured:
        speedup = o.measured_speedup or float(o.measured_fp32_latency_ms or 0.0) / float(o.measured_latency_ms or 1.0)
        o.fp32_latency_ms, o.latency_ms = reference, reference / speedup
