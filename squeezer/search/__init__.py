"""Accuracy-aware search: try several compression methods on one model and keep the best.

A search runs candidates (built-in NNCF configs, or the user's own), measures each finished one on
the runtime where it will run, and returns the Pareto front of accuracy against latency and/or size
with one recommended model: the fastest (or smallest) within the accuracy budget, latencies within the
timing's noise counting as ties. Where no candidate within the budget is faster than FP32, the result
says so and, for the latency objective, recommends keeping the FP32 model.

The service runs candidates as ordinary jobs on as many workers as there are (`squeezer.jobs.searches`);
`search_in_process` (in `local.py`, which imports torch) runs the same candidates one after another in
the caller's process, with the caller's own training loop. This package itself does not import torch,
so the API can validate searches without it.
"""

from squeezer.search.candidates import BUILTIN_CANDIDATES, DEFAULT_CANDIDATES, candidate_configs
from squeezer.search.front import Recommendation, pareto_front, recommend, recommendation
from squeezer.search.halving import HalvingRule
from squeezer.search.result import CandidateOutcome, SearchResult
from squeezer.search.spec import AccuracyBudget, CandidateSpec, ComputeBudget, Objective, SearchSettings

__all__ = [
    "BUILTIN_CANDIDATES",
    "DEFAULT_CANDIDATES",
    "AccuracyBudget",
    "CandidateOutcome",
    "CandidateSpec",
    "ComputeBudget",
    "HalvingRule",
    "Objective",
    "Recommendation",
    "SearchResult",
    "SearchSettings",
    "candidate_configs",
    "pareto_front",
    "recommend",
    "recommendation",
]


def __getattr__(name: str) -> object:
    """`search_in_process` imports torch, so it loads on first use (the API imports this package)."""
    if name == "search_in_process":
        from squeezer.search.local import search_in_process

        return search_in_process
    raise AttributeError(name)
