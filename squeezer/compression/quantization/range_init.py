"""Range initialization from data and batch-norm adaptation.

Statistics are reduced batch by batch (min/max per batch, per sample for `mixed_min_max`, a
bounded random subsample for percentile-type statistics) so memory does not grow with the
number of init samples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from squeezer.compression.config.models import RangeInit
from squeezer.compression.graph.surgery import evaluating
from squeezer.compression.init_args import InitLoaderProtocol, iterate_batches
from squeezer.compression.quantization.quantizer import FakeQuantizer, _Collector

logger = logging.getLogger(__name__)

SUBSAMPLE_PER_BATCH = 65536
ACTIVATION_SCALE_FLOOR = 0.1  # the initial scale of an activation quantizer whose data are all zero
_MAD_TO_SIGMA = 1.482623


class StatCollector:
    """Per-quantizer statistics of the tensors it sees."""

    def __init__(self, axis: int | None) -> None:
        self.axis = axis
        self.mins: list[torch.Tensor] = []
        self.maxs: list[torch.Tensor] = []
        self.abs_maxs: list[torch.Tensor] = []
        self.sample_mins: list[torch.Tensor] = []
        self.sample_maxs: list[torch.Tensor] = []
        self.sample_abs_maxs: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._generator: torch.Generator | None = None

    def subsample(self, n: int, k: int, device: torch.device) -> torch.Tensor:
        """`k` random positions out of `n`, from this collector's own generator (seeded 0): the same
        calibration data gives the same ranges on every run, whatever the global RNG has done."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(0)
        return torch.randint(0, n, (k,), device=device, generator=self._generator)

    def _by_channel(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return x.reshape(1, -1)
        return x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)

    def update(self, x: torch.Tensor, keep_values: bool) -> None:
        x = x.detach().float()
        xc = self._by_channel(x)  # (C, N)
        self.mins.append(xc.amin(1))
        self.maxs.append(xc.amax(1))
        self.abs_maxs.append(xc.abs().amax(1))
        if self.axis is None and x.dim() > 1:
            per_sample = x.reshape(x.shape[0], -1)
            self.sample_mins.append(per_sample.amin(1))
            self.sample_maxs.append(per_sample.amax(1))
            self.sample_abs_maxs.append(per_sample.abs().amax(1))
        if keep_values:
            if xc.shape[1] > SUBSAMPLE_PER_BATCH:
                xc = xc[:, self.subsample(xc.shape[1], SUBSAMPLE_PER_BATCH, xc.device)]
            self.values.append(xc)

    def min_max(self, kind: str, symmetric: bool, params: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        top = self.abs_maxs if symmetric else self.maxs
        if kind == "min_max" or (kind == "mixed_min_max" and not self.sample_mins):
            return torch.stack(self.mins).amin(0), torch.stack(top).amax(0)
        if kind == "mixed_min_max":
            s_min = torch.cat(self.sample_mins)
            s_max = torch.cat(self.sample_abs_maxs if symmetric else self.sample_maxs)
            low = s_min.min() if symmetric else s_min.mean()
            return low.reshape(1), s_max.mean().reshape(1)
        if kind == "mean_min_max":
            return torch.stack(self.mins).mean(0), torch.stack(top).mean(0)
        lo_q = params.get("min_percentile", 0.1) / 100.0
        hi_q = params.get("max_percentile", 99.9) / 100.0
        if kind == "mean_percentile":
            qs = [torch.quantile(v, torch.tensor([lo_q, hi_q], device=v.device), dim=1) for v in self.values]
            stacked = torch.stack(qs).mean(0)
            return stacked[0], stacked[1]
        values = torch.cat(self.values, dim=1)
        if kind == "percentile":
            q = torch.quantile(values, torch.tensor([lo_q, hi_q], device=values.device), dim=1)
            return q[0], q[1]
        if kind == "threesigma":
            median = values.median(dim=1).values
            mad = (values - median[:, None]).abs().median(dim=1).values
            return median - 3 * _MAD_TO_SIGMA * mad, median + 3 * _MAD_TO_SIGMA * mad
        raise ValueError(f"unknown range init type {kind!r}")


@contextlib.contextmanager
def collecting(quantizers: dict[str, FakeQuantizer]) -> Iterator[None]:
    """Quantizers pass tensors through unchanged and record them (the model runs un-quantized)."""
    for q in quantizers.values():
        q.collector = _Collector()
    try:
        yield
    finally:
        for q in quantizers.values():
            q.collector = None


def _reduce_axis(q: FakeQuantizer) -> int | None:
    return q.axis


def init_ranges(
    model: nn.Module,
    weight_quantizers: dict[str, tuple[FakeQuantizer, torch.Tensor]],
    activation_quantizers: dict[str, FakeQuantizer],
    config_for: dict[str, RangeInit],
    loader: InitLoaderProtocol | None,
    device: torch.device,
) -> None:
    """Set every quantizer's range from statistics; `config_for` maps quantizer id -> range config."""
    for qid, (q, weight) in weight_quantizers.items():
        rc = config_for[qid]
        stats = StatCollector(_reduce_axis(q))
        stats.update(weight, keep_values=rc.type in ("percentile", "mean_percentile", "threesigma"))
        lo, hi = stats.min_max(rc.type, q.spec.mode == "symmetric", rc.params)
        q.apply_minmax(lo, hi, lower_bound=1e-8)
    if not activation_quantizers or loader is None:
        return
    n_samples = max(config_for[qid].num_init_samples for qid in activation_quantizers)
    if n_samples == 0:
        return
    collectors = {qid: StatCollector(_reduce_axis(q)) for qid, q in activation_quantizers.items()}
    all_q = {qid: q for qid, q in activation_quantizers.items()}
    weight_q = {qid: q for qid, (q, _) in weight_quantizers.items()}
    with evaluating(model), collecting({**all_q, **weight_q}), torch.no_grad():
        for args, kwargs in iterate_batches(loader, n_samples, device):
            model(*args, **kwargs)
            for qid, q in all_q.items():
                assert q.collector is not None
                keep = config_for[qid].type in ("percentile", "mean_percentile", "threesigma")
                for t in q.collector.batches:
                    collectors[qid].update(t, keep)
                q.collector.batches.clear()
            for q in weight_q.values():
                assert q.collector is not None
                q.collector.batches.clear()
    for qid, q in activation_quantizers.items():
        stats = collectors[qid]
        if not stats.mins:
            logger.warning("quantizer %s saw no data during range initialization", qid)
            continue
        rc = config_for[qid]
        lo, hi = stats.min_max(rc.type, q.spec.mode == "symmetric", rc.params)
        q.apply_minmax(lo, _floor_empty_ranges(lo, hi), lower_bound=1e-8)


def _floor_empty_ranges(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """`hi`, raised to ACTIVATION_SCALE_FLOOR only where the data have no spread at all (a dead ReLU).

    NNCF floors every initial symmetric scale at 0.1. Data far below that (squeeze-excitation gates
    of 1e-4, a block whose BatchNorm then scales them back up) landed on a few levels, mostly zero:
    MobileNetV3-small's output moved by 75% of its size after range init, against 2% for
    onnxruntime's min-max PTQ (bench/bench_ptq_quality.py), and QAT from there saw constant channels
    and exploding gradients. A range that fits the data is what every PTQ tool uses.
    """
    empty = torch.maximum(lo.abs(), hi.abs()) == 0
    return torch.where(empty, torch.full_like(hi, ACTIVATION_SCALE_FLOOR), hi)


def adapt_batchnorm(model: nn.Module, loader: InitLoaderProtocol, num_samples: int, device: torch.device) -> None:
    """Re-estimate BatchNorm running statistics with compression active."""
    if num_samples <= 0:
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    modes = {m: m.training for m in model.modules()}
    try:
        for bn in bns:
            bn.train()
        with torch.no_grad():
            for args, kwargs in iterate_batches(loader, num_samples, device):
                model(*args, **kwargs)
    finally:
        for m, mode in modes.items():
            m.training = mode
