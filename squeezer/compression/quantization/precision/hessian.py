"""Per-layer sensitivity for HAWQ: the average Hessian trace of the loss w.r.t. each layer's weight.

Hutchinson's estimator: for a Rademacher vector v (entries +-1), E[v^T H v] = tr(H). One
Hessian-vector product over all layers at once (double backward) gives v_i^T (H v)_i per layer i,
whose expectation is the trace of that layer's diagonal block tr(H_ii): the cross terms have zero
mean. The trace is divided by the layer's number of weights (HAWQ-v2's "average trace"), so that
`average trace * ||W - Q(W)||^2` estimates the second-order loss increase of quantizing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from squeezer.compression.graph.surgery import evaluating

logger = logging.getLogger(__name__)

MIN_PROBES = 4  # the running mean of fewer Hutchinson probes is too noisy to call converged

Batch = tuple[tuple[Any, ...], dict[str, Any], Any]  # (args, kwargs, target)


@dataclass
class TraceEstimate:
    """Average Hessian trace per layer id, and how many probes each batch took."""

    traces: dict[str, float]
    probes_per_batch: list[int]
    samples: int


def _rademacher(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, like.shape, generator=generator, device="cpu", dtype=torch.int8)
    return (bits.to(like.dtype) * 2 - 1).to(like.device)


def average_hessian_traces(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    batches: Iterable[Batch],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    iter_number: int,
    tolerance: float,
    seed: int = 0,
) -> TraceEstimate:
    """Average Hessian trace of `loss_fn(model(*args, **kwargs), target)` for each weight in `weights`.

    Per batch: one forward and backward with `create_graph`, then up to `iter_number` Hutchinson
    probes on that graph, stopping early when the running mean of the total trace moves by less
    than `tolerance` (relative) after MIN_PROBES probes. Reusing one batch's graph for all its
    probes costs one forward/backward per batch instead of one per probe; the estimate is the same
    expectation. Batches are weighted by their number of samples. The model runs in eval mode
    (BatchNorm uses its running statistics, dropout is off): the network that will be deployed.
    """
    ids = list(weights)
    params = [weights[i] for i in ids]
    generator = torch.Generator().manual_seed(seed)
    totals = torch.zeros(len(ids), dtype=torch.float64)
    seen = 0
    probes_per_batch: list[int] = []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        # the fused attention kernels (nn.MultiheadAttention, F.scaled_dot_product_attention) have no double
        # backward on CPU; the math one is plain differentiable ops
        with evaluating(model), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            for args, kwargs, target in batches:
                loss = loss_fn(model(*args, **kwargs), target)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                live = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
                batch_sum = torch.zeros(len(ids), dtype=torch.float64)
                mean_total = None
                probes = 0
                for probes in range(1, max(iter_number, 1) + 1):
                    vs = [_rademacher(params[k], generator) for k in live]
                    hvs = torch.autograd.grad(
                        [grads[k] for k in live], [params[k] for k in live], vs, retain_graph=True, allow_unused=True
                    )
                    for k, v, hv in zip(live, vs, hvs, strict=True):
                        if hv is not None:
                            batch_sum[k] += float((hv.detach() * v).sum())
                    total = float(batch_sum.sum()) / probes
                    converged = (
                        mean_total is not None
                        and probes >= MIN_PROBES
                        and abs(total - mean_total) <= tolerance * max(abs(mean_total), 1e-12)
                    )
                    mean_total = total
                    if converged:
                        break
                n = _batch_samples(target, args)
                totals += batch_sum / probes * n
                seen += n
                probes_per_batch.append(probes)
                del grads, loss
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    if seen == 0:
        raise ValueError("no batch to estimate Hessian traces on")
    traces = {i: float(totals[k]) / seen / max(params[k].numel(), 1) for k, i in enumerate(ids)}
    logger.debug("Hutchinson probes per batch: %s", probes_per_batch)
    return TraceEstimate(traces, probes_per_batch, seen)


def _batch_samples(target: Any, args: tuple[Any, ...]) -> int:
    for t in (target, *args):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return 1
