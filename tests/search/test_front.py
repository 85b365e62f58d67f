"""The Pareto front, the recommendation and the halving rule: the decisions a search makes."""

from __future__ import annotations

import itertools
import random

import pytest

from squeezer.search import AccuracyBudget, CandidateOutcome, HalvingRule, pareto_front, recommend
from squeezer.search.front import Recommendation, common_latency_scale, recommendation


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
    rule = HalvingRule(rate=2, grace_epochs=1)  # judged from the first rung on
    assert [e for e in range(10) if rule.is_rung(e)] == [1, 2, 4, 8]
    margins = {"a": -5.0, "b": -1.0, "c": 0.5, "d": -2.0}
    assert [n for n in margins if rule.should_stop(n, 1, margins)] == ["a", "d"]  # best 2 of 4 go on: c, b
    assert not rule.should_stop("a", 3, margins)  # not a rung
    assert not rule.should_stop("a", 1, {"a": -5.0})  # nothing to compare with yet
    within = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    assert not any(rule.should_stop(n, 2, within) for n in within)


def test_halving_only_ranks_a_candidate_against_those_compressed_at_least_as_much():
    rule = HalvingRule(rate=2, grace_epochs=1)
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


# ------------------------------------------------------------------ measurement noise in the ranking

SPARSE_INT8 = ["magnitude_sparsity", "quantization"]


def timed(name, metric, speedup, size, algorithms=("quantization",), floor=93.21, spread=None):
    """A finished candidate as a worker reports it: FP32 timed at 10 ms alongside it, and its paired speedup."""
    return CandidateOutcome(
        name=name,
        status="succeeded",
        metric=metric,
        within_budget=metric >= floor,
        measured_latency_ms=10.0 / speedup,
        measured_fp32_latency_ms=10.0,
        measured_speedup=speedup,
        measured_speedup_spread=spread,
        size_bytes=size,
        algorithms=list(algorithms),
    )


def scaled(*outcomes):
    common_latency_scale(outcomes)
    return list(outcomes)


def test_latencies_within_the_noise_are_ties_that_go_to_the_more_accurate_then_the_smaller():
    # 1.93x against 1.91x: the same speed, measured twice (the digits CNN's INT8 files)
    close = scaled(timed("faster", 93.70, 1.932, 90_000), timed("accurate", 94.21, 1.915, 92_763))
    assert recommend(close, "latency") == "accurate"
    assert set(pareto_front(close, "latency")) == {"faster", "accurate"}
    same_metric = scaled(timed("faster", 94.0, 1.932, 92_763), timed("smaller", 94.0, 1.915, 60_000))
    assert recommend(same_metric, "latency") == "smaller"
    assert pareto_front(same_metric, "latency") == ["faster", "smaller"]  # neither is measurably better
    # 2.31x against 2.16x is a real difference (pruning 50% against 30%): the faster wins within the budget
    apart = scaled(timed("pruning50", 93.77, 2.306, 35_047), timed("pruning30", 94.21, 2.157, 60_963))
    assert recommend(apart, "latency") == "pruning50"


def test_a_spread_wider_than_the_noise_floor_widens_the_ties():
    outcomes = [timed("faster", 93.5, 2.16, 50_000), timed("accurate", 94.0, 2.0, 50_000)]  # 8% apart
    assert recommend(scaled(*outcomes), "latency") == "faster"
    outcomes[0].measured_speedup_spread = 0.1  # its pairs' ratios spread 10% around their median
    assert recommend(scaled(*outcomes), "latency") == "accurate"


def test_size_ties_are_exact_and_both_ties_latency_within_its_share_of_the_noise():
    outcomes = scaled(timed("smaller", 93.5, 2.0, 49_999), timed("accurate", 94.0, 2.0, 50_000))
    assert recommend(outcomes, "size") == "smaller"  # a file's size is not noisy: one byte is smaller
    outcomes = scaled(timed("faster", 93.5, 2.08, 50_000), timed("accurate", 94.0, 2.0, 50_000))
    assert recommend(outcomes, "both") == "accurate"  # 4% faster is within the noise


def test_a_sparse_model_the_runtime_does_not_speed_up_loses_to_its_dense_twin():
    # the measured case: within 1 point of 95.21%, both files 29,204 bytes and 1.02x FP32's speed
    int8 = timed("int8", 94.21, 1.018, 29_204)
    sparse = timed("int8_sparsity50", 93.70, 1.024, 29_204, algorithms=SPARSE_INT8)
    assert recommend(scaled(sparse, int8), "both") == "int8"
    # more accurate, but neither smaller nor faster: its sparsity bought nothing on this runtime
    dense = timed("int8", 93.70, 1.90, 29_204)
    lucky = timed("int8_sparsity50", 94.21, 1.93, 29_204, algorithms=SPARSE_INT8)
    for objective in ("latency", "size", "both"):
        assert recommend(scaled(lucky, dense), objective) == "int8", objective
    assert lucky.sparse and not dense.sparse


def test_a_sparse_model_that_is_smaller_or_faster_or_alone_in_the_budget_can_be_recommended():
    dense = timed("int8", 94.0, 1.9, 29_204)
    assert recommend(scaled(dense, timed("sparse", 94.1, 1.9, 20_000, SPARSE_INT8)), "size") == "sparse"
    assert recommend(scaled(dense, timed("sparse", 94.1, 2.5, 29_204, SPARSE_INT8)), "latency") == "sparse"
    lossy_dense = timed("int8", 92.0, 1.9, 29_204)  # outside the budget: no alternative to it
    assert recommend(scaled(lossy_dense, timed("sparse", 94.1, 1.9, 29_204, SPARSE_INT8)), "latency") == "sparse"


def test_with_no_candidate_faster_than_fp32_the_recommendation_is_to_keep_it():
    int8 = timed("int8", 94.21, 1.018, 29_204)
    sparse = timed("int8_sparsity50", 93.70, 1.024, 29_204, algorithms=SPARSE_INT8)
    fast_but_lossy = timed("pruning50_int8", 90.0, 2.0, 20_000)  # faster, outside the budget
    outcomes = scaled(int8, sparse, fast_but_lossy)
    advice = recommendation(outcomes, "latency", "onnxruntime")
    assert advice.name is None and advice.keep_fp32
    assert "keep the FP32 model" in advice.note and "onnxruntime" in advice.note and "1.02x" in advice.note
    assert recommend(outcomes, "latency") is None
    smallest = recommendation(outcomes, "size", "onnxruntime")  # for size, the smallest: said not to be faster
    assert smallest.name == "int8" and not smallest.keep_fp32 and "not measurably faster" in smallest.note
    assert recommendation(scaled(timed("slower", 94.0, 0.8, 10)), "size").note is not None


def test_a_candidate_no_faster_than_fp32_is_not_recommended_for_latency_over_one_that_is():
    # within the noise of the fastest, but not of FP32's speed either: FP32 would be as good as it
    outcomes = scaled(timed("fast", 93.5, 1.07, 29_000), timed("accurate", 94.0, 1.03, 29_000))
    advice = recommendation(outcomes, "latency")
    assert advice == Recommendation("fast")
    assert recommendation(scaled(timed("int8", 94.0, 1.9, 29_000)), "latency") == Recommendation("int8")


def test_recommendation_is_on_the_front_with_noisy_latencies():
    rng = random.Random(5)
    for objective, _ in itertools.product(["latency", "size", "both"], range(200)):
        outcomes = scaled(
            *(
                timed(f"c{i}", rng.choice([93.0, 93.5, 94.0, 94.5]), rng.uniform(0.9, 1.3), rng.choice([10, 11, 12]))
                for i in range(6)
            )
        )
        best = recommend(outcomes, objective)
        assert best is None or best in pareto_front(outcomes, objective)


# ------------------------------------------------------------------------- halving's grace period


def test_halving_gives_every_candidate_a_grace_period():
    rule = HalvingRule()  # the default: judged after two epochs of training
    # the measured case: pruning30_int8 0.01 under the floor at epoch 1, behind the others compressed as much
    margins = {"pruning30_int8": -0.01, "pruning50_int8": 0.3, "pruning50_int8_kd": 0.2, "adaptive": 0.1}
    assert HalvingRule(grace_epochs=1).should_stop("pruning30_int8", 1, margins)  # no grace: stopped at once
    assert not rule.should_stop("pruning30_int8", 1, margins)
    assert rule.should_stop("pruning30_int8", 2, margins, previous=-0.005)  # its grace is over; it is falling
    assert [e for e in range(1, 17) if HalvingRule(grace_epochs=3).judges(e)] == [4, 8, 16]


def test_halving_does_not_stop_a_candidate_closing_in_on_the_floor():
    rule = HalvingRule()
    margins = {"pruning30_int8": -0.01, "pruning50_int8": 0.3, "pruning50_int8_kd": 0.2, "adaptive": 0.1}
    assert not rule.should_stop("pruning30_int8", 2, margins, previous=-0.3)  # improving: next epoch in budget
    assert not rule.should_stop("pruning30_int8", 2, margins, previous=-0.02)  # gains its distance in an epoch
    assert rule.should_stop("pruning30_int8", 2, margins, previous=-0.015)  # too slowly to get there
    assert rule.should_stop("pruning30_int8", 2, margins, previous=0.05)  # falling
    far = {**margins, "pruning30_int8": -2.0}
    assert rule.should_stop("pruning30_int8", 2, far, previous=-2.5)  # improving, but far under the floor
    reason = rule.verdict("pruning30_int8", 2, far, previous=-2.5)
    assert reason == (
        "successive halving at epoch 2: -2 from the accuracy budget, rank 4 of the 4 candidates there "
        "compressed at least as much (the best 2 go on)"
    )


def trained(name, metric, latency, size, epochs):
    o = outcome(name, metric, latency, size)
    o.epochs = epochs
    return o


def test_a_post_training_candidate_within_budget_wins_unless_training_buys_measurable_speed():
    ptq = outcome("ptq", 92.0, 10.0, 1000)  # no epochs: post-training quantization
    qat = trained("int8", 93.5, 9.8, 1000, epochs=4)  # more accurate, 2% faster: within the timing noise
    advice = recommendation([ptq, qat], "latency")
    assert advice.name == "ptq"
    assert "saves the 4 training epochs int8 took" in advice.note
    pruned = trained("pruning50_int8", 91.0, 6.0, 600, epochs=3)  # measurably faster: training paid off
    assert recommendation([ptq, qat, pruned], "latency").name == "pruning50_int8"
    assert recommendation([ptq, trained("smaller", 91.0, 10.0, 900, epochs=2)], "size").name == "smaller"
    outside = outcome("ptq", 80.0, 10.0, 1000)  # below the floor: training it is
    assert recommendation([outside, qat], "latency").name == "int8"
