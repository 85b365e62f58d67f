"""The Pareto front, the recommendation and the halving rule: the decisions a search makes."""

from __future__ import annotations

import itertools
import random

import pytest

from squeezer.search import AccuracyBudget, CandidateOutcome, HalvingRule, pareto_front, recommend
from squeezer.search.front import common_latency_scale


def outcome(name, metric, latency, size, status="succeeded", floor=90.0):
    return CandidateOutcome(
        name=name, status=status, metric=metric, latency_ms=latency, size_bytes=size, within_budget=metric >= floor
    )


def dominated(a, b, objective):
    """Whether b dominates a, written out per objective."""
    costs = {"latency": ("latency_ms",), "size": ("size_bytes",), "both": ("latency_ms", "size_bytes")}[objective]
    no_worse = b.metric >= a.metric and all(getattr(b, c) <= getattr(a, c) for c in costs)
    better = b.metric > a.metric or any(getattr(b, c) < getattr(a, c) for c in costs)
    return no_worse and better


@pytest.mark.parametrize("objective", ["latency", "size", "both"])
def test_front_is_exactly_the_non_dominated_candidates(objective):
    rng = random.Random(7)
    for _ in range(50):
        outcomes = [
            outcome(f"c{i}", rng.choice([88, 90, 92, 95]), rng.choice([1.0, 2.0, 3.0]), rng.choice([10, 20, 30]))
            for i in range(8)
        ]
        front = set(pareto_front(outcomes, objective))
        for a in outcomes:
            assert (a.name in front) == (not any(dominated(a, b, objective) for b in outcomes))


def test_unfinished_candidates_are_not_on_the_front():
    outcomes = [
        outcome("done", 91, 2.0, 20),
        outcome("stopped", 99, 0.5, 5, status="stopped"),
        CandidateOutcome(name="running", status="running", metric=99.0),
    ]
    assert pareto_front(outcomes, "latency") == ["done"]


def test_recommendation_is_the_fastest_within_budget():
    outcomes = [
        outcome("int8", 95, 2.0, 30),
        outcome("pruned", 91, 1.0, 15),
        outcome("too_lossy", 80, 0.5, 10),  # on the front (fastest), but outside the budget
    ]
    assert pareto_front(outcomes, "latency") == ["too_lossy", "pruned", "int8"]
    assert recommend(outcomes, "latency") == "pruned"
    assert recommend(outcomes, "size") == "pruned"
    assert recommend([outcomes[2]], "latency") is None


def test_recommendation_is_always_on_the_front():
    rng = random.Random(3)
    for objective, _ in itertools.product(["latency", "size", "both"], range(30)):
        outcomes = [outcome(f"c{i}", rng.uniform(85, 99), rng.uniform(1, 3), rng.randint(5, 30)) for i in range(6)]
        best = recommend(outcomes, objective)
        assert best is None or best in pareto_front(outcomes, objective)


def test_accuracy_budget_floor():
    assert AccuracyBudget(maximal_absolute_accuracy_degradation=1.5).floor(90.0) == 88.5
    assert AccuracyBudget(maximal_relative_accuracy_degradation=10).floor(90.0) == pytest.approx(81.0)
    with pytest.raises(ValueError, match="exactly one"):
        AccuracyBudget()


def test_halving_keeps_the_best_share_and_everyone_within_budget():
    rule = HalvingRule(rate=2)
    assert [e for e in range(10) if rule.is_rung(e)] == [1, 2, 4, 8]
    margins = {"a": -5.0, "b": -1.0, "c": 0.5, "d": -2.0}
    assert [n for n in margins if rule.should_stop(n, 1, margins)] == ["a", "d"]  # best 2 of 4 go on: c, b
    assert not rule.should_stop("a", 3, margins)  # not a rung
    assert not rule.should_stop("a", 1, {"a": -5.0})  # nothing to compare with yet
    within = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    assert not any(rule.should_stop(n, 2, within) for n in within)


def test_halving_only_ranks_a_candidate_against_those_compressed_at_least_as_much():
    rule = HalvingRule(rate=2)
    # epoch 1 on the digits CNN: INT8 variants are ahead; 50%-pruned ones recover only later
    margins = {"int8": -0.2, "int8_kd": -0.3, "pruning50": -8.0, "pruning50_kd": -8.5}
    rates = {"int8": 0.0, "int8_kd": 0.0, "pruning50": 0.5, "pruning50_kd": 0.5}
    assert rule.should_stop("pruning50", 1, margins)  # on accuracy alone it would go
    assert not rule.should_stop("pruning50", 1, margins, rates)  # nothing as compressed is ahead of it
    assert rule.should_stop("pruning50_kd", 1, margins, rates)  # pruning50 is as compressed and ahead
    assert not rule.should_stop("int8_kd", 1, margins, rates)  # 2nd of the 4 at least as compressed as INT8
    assert not rule.should_stop("int8", 1, margins, rates)
    assert rule.should_stop("pruning50", 1, margins, {**rates, "pruning50": None})  # unknown: ranked against all


def test_latencies_are_compared_by_speedup_over_fp32_timed_alongside():
    # the same file timed on a busy worker (3x slower for both files) and on an idle one
    busy = CandidateOutcome(name="busy", status="succeeded", measured_latency_ms=30.0, measured_fp32_latency_ms=60.0)
    idle = CandidateOutcome(name="idle", status="succeeded", measured_latency_ms=12.0, measured_fp32_latency_ms=20.0)
    unmeasured = CandidateOutcome(name="stopped", status="stopped")
    common_latency_scale([busy, idle, unmeasured])
    assert busy.fp32_latency_ms == idle.fp32_latency_ms == 40.0  # the median FP32 time
    assert busy.latency_ms == pytest.approx(20.0) and idle.latency_ms == pytest.approx(24.0)  # 2x vs 1.67x
    assert busy.speedup == pytest.approx(2.0) and idle.speedup == pytest.approx(20 / 12)
    assert unmeasured.latency_ms is None
