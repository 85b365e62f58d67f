"""The Pareto front over accuracy and measured cost, and the recommended candidate.

Only candidates that finished with a measured latency and size take part: a stopped or failed
candidate has no exported model to deploy. The front is over every finished candidate (a faster
model outside the accuracy budget is still a trade-off worth showing); the recommendation is the
best within the budget.

Latencies are measured, and a measurement is noisy: two latencies closer than the search's noise
(`latency_noise`) are ties, in the front and in the recommendation. File sizes are exact.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from squeezer.search.result import CandidateOutcome
from squeezer.search.spec import Objective

LATENCY_NOISE = 0.05
"""The smallest relative difference in latency a search tells apart. A candidate's latency is FP32's
divided by its paired speedup, timed on whichever worker ran it while other candidates trained: one
file's paired speedup differs by a few percent between such measurements, and between two workers'
CPUs by more than the pairs' own spread shows. Below 5% the last digit decided: `int8_sparsity50`
(93.70%) was recommended over `int8` (94.21%), both files 29,204 bytes and both 1.02x FP32's speed.
Methods that do differ in speed differ by more (INT8 1.9x, pruned 2.2x to 2.3x on the digits CNN)."""


@dataclass(frozen=True)
class Recommendation:
    """The candidate to deploy (None: none), whether to keep the FP32 model instead, and why in words."""

    name: str | None
    keep_fp32: bool = False
    note: str | None = None


def latency_noise(outcomes: Sequence[CandidateOutcome]) -> float:
    """The search's tie tolerance, relative: the widest spread a worker reported for a candidate's
    speedup, never under `LATENCY_NOISE`. One number for the whole search, so that the front and the
    recommendation call the same latencies ties."""
    spreads = (o.measured_speedup_spread for o in outcomes if o.measured_speedup_spread is not None)
    return max([LATENCY_NOISE, *spreads])


def _measured(outcome: CandidateOutcome) -> bool:
    return (
        outcome.status == "succeeded"
        and outcome.metric is not None
        and outcome.latency_ms is not None
        and outcome.size_bytes is not None
    )


def _lower(x: float, y: float, noise: float) -> bool:
    """Whether `x` is lower than `y` by more than the relative `noise`."""
    return x * (1.0 + noise) < y


def _costs(outcome: CandidateOutcome, objective: Objective, noise: float) -> tuple[tuple[float, float], ...]:
    """The objective's costs (lower is better), each with its relative noise: latency's is the search's,
    a file size has none."""
    assert outcome.latency_ms is not None and outcome.size_bytes is not None
    latency, size = (float(outcome.latency_ms), noise), (float(outcome.size_bytes), 0.0)
    return {"latency": (latency,), "size": (size,), "both": (latency, size)}[objective]


def _dominates(a: CandidateOutcome, b: CandidateOutcome, objective: Objective, noise: float) -> bool:
    """Whether `a` is at least as good as `b` in the metric and every cost, and better in one: a higher
    metric, or a cost lower beyond its noise (a latency lower within the noise is no better)."""
    assert a.metric is not None and b.metric is not None
    costs = list(zip(_costs(a, objective, noise), _costs(b, objective, noise), strict=True))
    if a.metric < b.metric or any(ca > cb for (ca, _), (cb, _) in costs):
        return False
    return a.metric > b.metric or any(_lower(ca, cb, n) for (ca, n), (cb, _) in costs)


def _score(outcome: CandidateOutcome, objective: Objective) -> float:
    """The objective as one number, lower is better; `both` is the geometric mean of latency and size
    (a model twice as fast and twice as large ties with the original)."""
    assert outcome.latency_ms is not None and outcome.size_bytes is not None
    if objective == "latency":
        return float(outcome.latency_ms)
    if objective == "size":
        return float(outcome.size_bytes)
    return math.sqrt(float(outcome.latency_ms) * float(outcome.size_bytes))


def _score_noise(objective: Objective, noise: float) -> float:
    """The score's relative noise: latency's; none for a size; for `both`, the square root's share of it."""
    return {"latency": noise, "size": 0.0, "both": math.sqrt(1.0 + noise) - 1.0}[objective]


def pareto_front(outcomes: Sequence[CandidateOutcome], objective: Objective) -> list[str]:
    """Names of the measured candidates no other measured candidate dominates (at least as good in the
    metric and every cost, better in one beyond the noise), ordered by the objective."""
    noise = latency_noise(outcomes)
    points = [o for o in outcomes if _measured(o)]
    front = [b for b in points if not any(_dominates(a, b, objective, noise) for a in points)]
    return [o.name for o in sorted(front, key=lambda o: _score(o, objective))]


def _best(pool: Sequence[CandidateOutcome], objective: Objective, noise: float) -> CandidateOutcome:
    """The best of `pool` for the objective, where scores within the noise of the best are ties: of those,
    the most accurate, then the smallest file."""
    top = min(_score(o, objective) for o in pool) * (1.0 + _score_noise(objective, noise))
    ties = [o for o in pool if _score(o, objective) <= top]
    return min(ties, key=lambda o: (-float(o.metric or 0.0), o.size_bytes or 0, _score(o, objective), o.name))


def _faster_than_fp32(outcome: CandidateOutcome, noise: float) -> bool:
    """Measurably faster than FP32 timed alongside it (True where that was not timed: nothing says not)."""
    if outcome.latency_ms is None or outcome.fp32_latency_ms is None:
        return True
    return _lower(float(outcome.latency_ms), float(outcome.fp32_latency_ms), noise)


def _hollow_sparsity(outcome: CandidateOutcome, pool: Sequence[CandidateOutcome], noise: float) -> bool:
    """Whether `outcome` is sparse and neither smaller nor measurably faster than a dense candidate in
    `pool`: its zeros bought nothing on this runtime (dense kernels compute them all the same), so the
    dense model is the one to deploy, whatever the metrics' last digits say."""
    assert outcome.size_bytes is not None and outcome.latency_ms is not None
    return outcome.sparse and any(
        not dense.sparse
        and (dense.size_bytes or 0) <= outcome.size_bytes
        and not _lower(float(outcome.latency_ms), float(dense.latency_ms or 0.0), noise)
        for dense in pool
    )


def _not_faster(outcome: CandidateOutcome, runtime: str, noise: float) -> str:
    speed = f" ({outcome.speedup:.2f}x)" if outcome.speedup is not None else ""
    return f"{outcome.name}{speed} is not measurably faster than FP32 in {runtime} (timing noise {noise:.0%})"


def recommendation(
    outcomes: Sequence[CandidateOutcome], objective: Objective, runtime: str = "the runtime"
) -> Recommendation:
    """The measured candidate within the accuracy budget with the best objective, latencies within the
    noise counting as ties (ties: higher metric, then smaller file), a sparse candidate never over a
    dense one it is not smaller or measurably faster than.

    A candidate that is not measurably faster than FP32 is never presented as a speed-up: for
    `latency` it is no better than the original model, which is within any budget, so with no faster
    candidate the recommendation is to keep FP32; for `size` and `both` it may still be the smallest,
    and the note says it is not faster. The recommendation is on the front, except where a sparse
    candidate set aside for a dense one is what dominates it (it may measure more accurate).

    A candidate that needed no training (post-training quantization: 0 epochs) is recommended over a
    trained one that is not measurably cheaper, even a more accurate one: both are within the budget,
    and the note says how many training epochs that saves."""
    noise = latency_noise(outcomes)
    within = [o for o in outcomes if _measured(o) and o.within_budget]
    if not within:
        return Recommendation(None)
    pool = [o for o in within if objective != "latency" or _faster_than_fp32(o, noise)]
    if not pool:
        fastest = _best(within, "latency", noise)
        note = f"no candidate within the accuracy budget is faster: {_not_faster(fastest, runtime, noise)}"
        return Recommendation(None, keep_fp32=True, note=f"{note}; keep the FP32 model")
    pool = [o for o in pool if not _hollow_sparsity(o, pool, noise)]
    best = _best(pool, objective, noise)
    notes = []
    untrained = [o for o in pool if o.epochs == 0]
    if best.epochs > 0 and untrained:
        ready = _best(untrained, objective, noise)
        if not _measurably_cheaper(best, ready, objective, noise):
            cheaper = {"latency": "faster", "size": "smaller"}.get(objective, "cheaper")
            notes.append(
                f"{ready.name} needed no training and {best.name} is not measurably {cheaper}: recommending it "
                f"saves the {best.epochs} training epochs {best.name} took"
            )
            best = ready
    elif best.epochs == 0 and any(o.epochs > 0 for o in pool):
        spent = sum(o.epochs for o in pool if o.epochs > 0)
        notes.append(f"{best.name} needed no training; the trained candidates within the budget took {spent} epochs")
    if not _faster_than_fp32(best, noise):
        notes.append(f"{_not_faster(best, runtime, noise)}; recommended for its size")
    return Recommendation(best.name, note="; ".join(notes) or None)


def _measurably_cheaper(a: CandidateOutcome, b: CandidateOutcome, objective: Objective, noise: float) -> bool:
    """Whether `a` beats `b` on the objective's costs beyond the noise (latency) or at all (file size)."""
    pairs = zip(_costs(a, objective, noise), _costs(b, objective, noise), strict=True)
    return any(_lower(ca, cb, n) for (ca, n), (cb, _) in pairs)


def recommend(outcomes: Sequence[CandidateOutcome], objective: Objective) -> str | None:
    """The name of the recommended candidate (`recommendation`); None when none is within the budget,
    or when keeping the FP32 model is the recommendation."""
    return recommendation(outcomes, objective).name


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
