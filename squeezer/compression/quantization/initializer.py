"""The quantization section's `initializer` applied to inserted quantizers: range initialization (per
quantizer, as the range entries match it) and BatchNorm adaptation, at build time and again when the
controller's `init_range` is called."""

from __future__ import annotations

import logging

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import QuantizationConfig, RangeInit
from squeezer.compression.graph.scopes import matches_any
from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.init_args import BNAdaptationInitArgs, QuantizationRangeInitArgs
from squeezer.compression.quantization.placement import QuantizerSetup
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.compression.quantization.range_init import adapt_batchnorm, init_ranges
from squeezer.errors import CompressionError, ConfigError

logger = logging.getLogger(__name__)


def range_configs(cfg: QuantizationConfig, setup: QuantizerSetup) -> dict[str, RangeInit]:
    """The range-init entry of each quantizer: the one `initializer.range` gives, or the one per-layer entry
    whose quantizer group and scopes match it."""
    rng = cfg.initializer.range
    ids = [(w.id, "weights") for w in setup.weights] + [(a.id, "activations") for a in setup.activations]
    if not isinstance(rng, list):
        default = rng or RangeInit()
        return {qid: default for qid, _ in ids}
    result: dict[str, RangeInit] = {}
    for qid, group in ids:
        hits = [
            e
            for e in rng
            if (e.target_quantizer_group in (None, group))
            and (e.target_scopes is None or matches_any(qid.split(";"), e.target_scopes))
            and not matches_any(qid.split(";"), e.ignored_scopes)
        ]
        if len(hits) != 1:
            what = "more than one" if hits else "no"
            raise ConfigError(
                f"quantizer {qid} matches {what} per-layer range init entry", path="$.compression.initializer.range"
            )
        result[qid] = hits[0]
    return result


def initialize(
    ctx: BuildContext,
    cfg: QuantizationConfig,
    setup: QuantizerSetup,
    weight_q: dict[str, FakeQuantizer],
    act_q: dict[str, FakeQuantizer],
) -> None:
    """Initialize quantizer ranges and adapt BatchNorm statistics as `initializer` says, with the data
    registered on the config; an initializer that asks for data nobody registered is an error."""
    config = ctx.config
    range_args = (
        config.get_extra_struct(QuantizationRangeInitArgs)
        if config.has_extra_struct(QuantizationRangeInitArgs)
        else None
    )
    range_cfg = cfg.initializer.range
    wants_samples = (
        max((r.num_init_samples for r in range_cfg), default=0)
        if isinstance(range_cfg, list)
        else range_cfg.num_init_samples
        if range_cfg is not None
        else None
    )
    if wants_samples and range_args is None:
        raise CompressionError(
            "initializer.range asks for range initialization but no data loader is registered; call "
            "register_default_init_args(config, train_loader) first or set num_init_samples to 0"
        )
    configs = range_configs(cfg, setup)
    device = ctx.device()
    weights = {
        wp.id: (weight_q[wp.id], original_weight(ctx.model.get_submodule(wp.module), wp.tensor)) for wp in setup.weights
    }
    if wants_samples == 0:
        init_ranges(ctx.model, weights, {}, configs, None, device)
    else:
        if range_args is None:
            logger.warning("no init data loader registered: activation ranges keep their defaults (scale 1)")
        loader = range_args.data_loader if range_args else None
        init_ranges(ctx.model, weights, act_q, configs, loader, range_args.device or device if range_args else device)
    bn_cfg = cfg.initializer.batchnorm_adaptation
    if config.has_extra_struct(BNAdaptationInitArgs):
        bn_args = config.get_extra_struct(BNAdaptationInitArgs)
        samples = bn_cfg.num_bn_adaptation_samples if bn_cfg else 2000
        adapt_batchnorm(ctx.model, bn_args.data_loader, samples, bn_args.device or device)
    elif bn_cfg is not None and bn_cfg.num_bn_adaptation_samples > 0:
        raise CompressionError(
            "initializer.batchnorm_adaptation is configured but no data loader is registered; call "
            "register_default_init_args(config, train_loader) first"
        )
