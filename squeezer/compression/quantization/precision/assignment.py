"""Bit widths per layer under a compression-ratio constraint, minimizing the Hessian-weighted noise.

Definitions (exact):
- bit complexity of a configuration = sum over weight-quantized layers i of MACs_i * weight_bits_i,
  with MACs_i the multiply-accumulates of one sample through layer i (the layer's weight count
  times the number of positions it is applied at; see `hawq.macs_per_sample`);
- compression ratio = bit complexity with every weight at 8 bits / bit complexity of the
  configuration. All weights at 4 bits give 2.0.

NNCF weights FLOPs by max(weight bits, input activation bits); Squeezer keeps activations at
their configured 8 bits, so counting them would make every weight-only configuration 1.0. Only
weight bits enter here.

Objective: minimize sum_i max(trace_i, 0) * noise_i(b_i), with trace_i the layer's average Hessian
trace and noise_i(b) = ||W_i - Q_b(W_i)||^2 (the second-order estimate of the loss increase).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

REFERENCE_BITS = 8
RESOLUTION = 20_000  # budget units of the knapsack table: exact below this, within 1/RESOLUTION above


@dataclass(frozen=True)
class LayerCandidate:
    """One weight quantizer: its cost weight, sensitivity and quantization noise per allowed bit width."""

    id: str
    macs: int
    trace: float
    noise: dict[int, float] = field(default_factory=dict)  # allowed bits -> ||W - Q_b(W)||^2

    def loss_increase(self, bits: int) -> float:
        """Second-order estimate; a negative trace estimate (a Hessian that is not positive
        semi-definite away from a minimum, or estimator noise) counts as 0, never as a gain."""
        return max(self.trace, 0.0) * self.noise[bits]


def bit_complexity(layers: Sequence[LayerCandidate], bits: dict[str, int]) -> int:
    return sum(layer.macs * bits[layer.id] for layer in layers)


def compression_ratio(layers: Sequence[LayerCandidate], bits: dict[str, int]) -> float:
    """All-8-bit bit complexity over that of `bits` (see the module docstring)."""
    reference = sum(layer.macs * REFERENCE_BITS for layer in layers)
    return reference / max(bit_complexity(layers, bits), 1)


def assign_bits(layers: Sequence[LayerCandidate], ratio: float) -> dict[str, int]:
    """The configuration with compression ratio >= `ratio` that minimizes the summed loss increase.

    A multiple-choice knapsack solved by dynamic programming over the bit-complexity budget, not
    greedily: lowering layers in order of loss per saved bit can take a cheap small layer first and
    then still need a large one that alone would have sufficed (see the tests); the table costs
    little (layers x budget units). Costs are counted in units of their greatest common divisor:
    exact when the budget is at most RESOLUTION such units (MACs of conv nets share large powers of
    two); above that they are rounded up to budget / RESOLUTION, so the answer still meets the
    ratio and is optimal for the rounded costs. Ties go to more bits. Raises ValueError when even
    the lowest bits everywhere miss the ratio.
    """
    if not layers:
        return {}
    reference = sum(layer.macs * REFERENCE_BITS for layer in layers)
    budget = reference / ratio
    lowest = {layer.id: min(layer.noise) for layer in layers}
    if bit_complexity(layers, lowest) > budget * (1 + 1e-12):
        raise ValueError(
            f"compression ratio {ratio:g} is out of reach: the lowest allowed bits everywhere give "
            f"{compression_ratio(layers, lowest):.4g}"
        )
    # costs in units of their greatest common divisor are exact integers; above RESOLUTION units
    # they are coarsened (rounded up: a coarsened answer still meets the ratio)
    gcd = math.gcd(*(layer.macs * b for layer in layers for b in layer.noise))
    unit = max(1.0, budget / gcd / RESOLUTION) * max(gcd, 1)
    capacity = math.floor(budget / unit + 1e-9)
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choices: list[np.ndarray] = []
    for layer in layers:
        options = sorted(layer.noise, reverse=True)  # more bits first: they win ties
        new = np.full(capacity + 1, np.inf)
        pick = np.full(capacity + 1, -1, dtype=np.int16)
        for k, bits in enumerate(options):
            cost = _units(layer.macs * bits, unit)
            if cost > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[cost:] = best[: capacity + 1 - cost] + layer.loss_increase(bits)
            better = candidate < new
            new[better] = candidate[better]
            pick[better] = k
        best = new
        choices.append(pick)
    if not np.isfinite(best).any():  # the rounding up lost a configuration that just fits
        return lowest
    used = int(np.flatnonzero(best == best.min())[-1])  # equal loss: the configuration with more bits
    result: dict[str, int] = {}
    for layer, pick in zip(reversed(layers), reversed(choices), strict=True):
        options = sorted(layer.noise, reverse=True)
        bits = options[int(pick[used])]
        result[layer.id] = bits
        used -= _units(layer.macs * bits, unit)
    return {layer.id: result[layer.id] for layer in layers}


def _units(cost: int, unit: float) -> int:
    """`cost` in table units, rounded up (the float guard keeps exact multiples exact)."""
    return math.ceil(cost / unit - 1e-9)
