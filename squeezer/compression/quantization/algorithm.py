"""Quantization builder and controller: insert quantizers, initialize ranges, stage, strip."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

from torch import fx, nn
from torch.nn.utils import parametrize

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import QuantizationConfig
from squeezer.compression.controller import (
    CompressionController,
    CompressionScheduler,
    CompressionStage,
    Statistics,
)
from squeezer.compression.graph.modules import is_weighted_for
from squeezer.compression.graph.scopes import check_scopes_match
from squeezer.compression.graph.surgery import weight_parametrizations
from squeezer.compression.init_args import QuantizationRangeInitArgs
from squeezer.compression.quantization.initializer import initialize, range_configs
from squeezer.compression.quantization.op_kinds import is_concat
from squeezer.compression.quantization.placement import (
    ACTIVATIONS_ATTR,
    WEIGHTED_MODULES,
    PlacementOptions,
    QuantizerSetup,
    apply_manual_precision,
    compute_setup,
    untraced_setup,
)
from squeezer.compression.quantization.precision.hawq import run_hawq
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.compression.quantization.strip import strip_quantizers
from squeezer.compression.registry import name_of, register_algorithm
from squeezer.errors import ConfigError

logger = logging.getLogger(__name__)

SETUP_VERSION = 1


def weight_quantizer_of(module: nn.Module, tensor: str = "weight") -> FakeQuantizer | None:
    return next((p for p in weight_parametrizations(module, tensor) if isinstance(p, FakeQuantizer)), None)


# ---------------------------------------------------------------------------------------------- builder


def _insert(ctx: BuildContext, setup: QuantizerSetup) -> tuple[dict[str, FakeQuantizer], dict[str, FakeQuantizer]]:
    model = ctx.model
    weight_q: dict[str, FakeQuantizer] = {}
    for wp in setup.weights:
        module = model.get_submodule(wp.module)
        q = FakeQuantizer(wp.spec)
        parametrize.register_parametrization(module, wp.tensor, q)
        weight_q[wp.id] = q
    act_q: dict[str, FakeQuantizer] = {}
    if not setup.activations:
        return weight_q, act_q
    gm = ctx.gm
    container = nn.ModuleDict()
    gm.add_submodule(ACTIVATIONS_ATTR, container)
    by_name = {name: node for node, name in ctx.traced.names.items()}  # type: ignore[union-attr]
    last_placeholder = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    for point in setup.activations:
        q = FakeQuantizer(point.spec)
        container[point.id] = q
        act_q[point.id] = q
        target = f"{ACTIVATIONS_ATTR}.{point.id}"
        for producer_name in point.producers:
            producer = by_name[producer_name]
            users = [by_name[u] for p, u in point.edges if p == producer_name]
            anchor = last_placeholder if producer.op == "placeholder" else producer
            with gm.graph.inserting_after(anchor):
                qnode = gm.graph.call_module(target, (producer,))
            for user in users:
                user.replace_input_with(producer, qnode)
        for arg_name, consumer_name in point.chain_ends:
            arg, consumer = by_name[arg_name], by_name[consumer_name]
            with gm.graph.inserting_before(consumer):
                qnode = gm.graph.call_module(target, (arg,))
            consumer.replace_input_with(arg, qnode)
    if ctx.placement.stores_signed_concat_inputs_as_int8:
        _store_concat_inputs_as_int8(gm, act_q)
    gm.graph.lint()
    gm.recompile()
    return weight_q, act_q


def _store_concat_inputs_as_int8(gm: fx.GraphModule, act_q: dict[str, FakeQuantizer]) -> None:
    """Mark the activation quantizers that a concat reads (the policy's `stores_signed_concat_inputs_as_int8`)."""
    for node in activation_nodes(gm):
        if any(map(is_concat, node.users)):
            act_q[str(node.target).removeprefix(ACTIVATIONS_ATTR + ".")].int8_storage = True


def _validate_scopes(ctx: BuildContext, cfg: QuantizationConfig) -> None:
    if ctx.traced is None:
        return
    names = [*ctx.traced.names.values(), *ctx.traced.nncf_names.values()]
    for kind, patterns, path in (
        ("ignored_scopes", cfg.ignored_scopes, "ignored_scopes"),
        ("target_scopes", cfg.target_scopes, "target_scopes"),
        ("weights.ignored_scopes", cfg.weights.ignored_scopes, "weights.ignored_scopes"),
        ("activations.ignored_scopes", cfg.activations.ignored_scopes, "activations.ignored_scopes"),
    ):
        if patterns and cfg.validate_scopes:
            check_scopes_match(names, patterns, kind, f"$.compression.{path}")


@register_algorithm(QuantizationConfig)
def build_quantization(ctx: BuildContext, cfg: QuantizationConfig) -> QuantizationController:
    if ctx.cfg.target_device == "CPU_SPR":
        raise ConfigError("target_device CPU_SPR is not supported by quantization", path="$.target_device")
    if ctx.cfg.target_device == "NPU" and cfg.preset is not None:
        raise ConfigError("the NPU target device does not support presets", path="$.compression.preset")
    precision = cfg.initializer.precision
    if precision is not None and precision.type == "autoq":
        raise ConfigError(
            "precision type 'autoq' (NNCF's reinforcement-learning search) is not supported; allowed: "
            "'hawq' (Hessian-trace sensitivity search) or 'manual' (bitwidth_per_scope)",
            path="$.compression.initializer.precision.type",
        )
    _validate_scopes(ctx, cfg)
    if ctx.cfg.model_type == "transformer":  # NNCF 3.x's post-training defaults for transformers, unless set:
        # asymmetric activations (GELU outputs) and 8-bit weights, which absorb SmoothQuant's scales
        # (7-bit weights, the overflow fix's default, cost MiniLM 0.994 -> 0.986 cosine)
        defaults = {"preset": "mixed", "overflow_fix": "first_layer_only"}
        cfg = cfg.model_copy(update={k: v for k, v in defaults.items() if k not in cfg.model_fields_set})
    opts = PlacementOptions(ctx.cfg.target_device, ctx.cfg.ignored_scopes, ctx.cfg.target_scopes, ctx.placement)
    if ctx.builder_state is not None:
        setup = QuantizerSetup.from_dict(ctx.builder_state["quantizer_setup"])
    elif ctx.traced is None:
        setup = untraced_setup(ctx.model, cfg, opts)
        warnings.warn(
            f"the model could not be traced ({ctx.trace_error}); only weights are quantized, activation "
            f"quantizers were skipped for the whole model",
            RuntimeWarning,
            stacklevel=3,
        )
        ctx.notes.append("activations not quantized: model not traceable")
    else:
        setup = compute_setup(ctx.traced, cfg, opts)
        if precision is not None:
            apply_manual_precision(setup, precision.bitwidth_per_scope)
    precision_report = ctx.builder_state.get("precision_init") if ctx.builder_state is not None else None
    if ctx.should_init and precision is not None and precision.type == "hawq":
        precision_report = run_hawq(ctx, precision, setup, range_configs(cfg, setup))  # FP32 model, before insertion
    _warn_fp32_matrices(ctx, setup)  # before quantizers add parameters of their own
    weight_q, act_q = _insert(ctx, setup)
    if ctx.should_init:
        initialize(ctx, cfg, setup, weight_q, act_q)
    ctrl = QuantizationController(ctx.model, ctx, cfg, setup, weight_q, act_q)
    ctrl.builder_state = {
        "quantizer_setup": setup.to_dict(),
        "version": SETUP_VERSION,
        "weighted_modules": len([m for m in ctx.model.modules() if isinstance(m, WEIGHTED_MODULES)]),
    }
    if ctx.cfg.model_type == "transformer":
        _transformer_rules(ctx, ctrl)
    if precision_report is not None:
        ctrl.builder_state["precision_init"] = precision_report
    return ctrl


def _warn_fp32_matrices(ctx: BuildContext, setup: QuantizerSetup) -> None:
    """Name the weight matrices no quantizer covers because no layer Squeezer quantizes owns them (a bare
    nn.Parameter a custom module multiplies by): they stay FP32 in the export, which the size ratio alone
    does not show. Layers left out by ignored_scopes are not named: that was asked for."""
    quantized = {wp.module for wp in setup.weights}
    left = [
        f"{name}.{pname}" if name else pname
        for name, module in ctx.model.named_modules()
        if name not in quantized
        and not is_weighted_for(module, "quantization")
        and not isinstance(module, nn.MultiheadAttention)
        and "parametrizations" not in name.split(".")  # another algorithm's weight (mask, quantizer)
        for pname, p in module.named_parameters(recurse=False)
        if p.dim() == 2
    ]
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        # logged, not a Python warning: the model compresses correctly, only less than it could
        logger.warning(
            "%d weight matrices are not owned by a layer Squeezer quantizes and stay FP32: %s", len(left), shown
        )
        ctx.notes.append(f"FP32 weight matrices: {len(left)}")


def _transformer_rules(ctx: BuildContext, ctrl: QuantizationController) -> None:
    """`"model_type": "transformer"`: the post-training steps after range init (SmoothQuant, min-max
    ranges, bias correction), recorded in the builder state so that a resumed model gets the same
    SmoothQuant multiplies (their values and the rescaled weights then come from the state dict)."""
    from squeezer.compression.ptq.post_training import calibrate_for_training
    from squeezer.compression.ptq.smooth_quant import restore_smoothing

    if ctx.builder_state is not None:
        restore_smoothing(ctx.gm, ctx.builder_state.get("smooth_quant", {}))
        ctrl.builder_state["smooth_quant"] = ctx.builder_state.get("smooth_quant", {})
        return
    if ctx.traced is None or not ctx.config.has_extra_struct(QuantizationRangeInitArgs):
        return
    loader = ctx.config.get_extra_struct(QuantizationRangeInitArgs).data_loader
    ctrl.builder_state["smooth_quant"] = calibrate_for_training(ctrl, loader, ctx.device(), transformer=True)


# ---------------------------------------------------------------------------------------------- controller


class StagedQuantizationScheduler(CompressionScheduler):
    """Enables activation / weight quantizers at their start epochs."""

    def __init__(self, ctrl: QuantizationController, activations_start: int, weights_start: int) -> None:
        super().__init__()
        self.ctrl = ctrl
        self.activations_start = activations_start
        self.weights_start = weights_start
        self._apply_flags()

    def _apply_flags(self) -> None:
        epoch = max(self.current_epoch, 0)
        self.ctrl.set_activation_quantization(epoch >= self.activations_start)
        self.ctrl.set_weight_quantization(epoch >= self.weights_start)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        if self.current_epoch in (self.activations_start, self.weights_start):
            self._apply_flags()

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._apply_flags()


class QuantizationController(CompressionController):
    name = name_of(QuantizationConfig)
    ptq_report: Any = None  # set by squeezer.compression.ptq.quantize (a PTQReport): what post-training did

    def __init__(
        self,
        model: nn.Module,
        ctx: BuildContext,
        cfg: QuantizationConfig,
        setup: QuantizerSetup,
        weight_q: dict[str, FakeQuantizer],
        act_q: dict[str, FakeQuantizer],
    ) -> None:
        super().__init__(model, ctx)
        self.cfg = cfg
        self.setup = setup
        self.weight_quantizers = weight_q
        self.non_weight_quantizers = act_q
        if cfg.is_staged and cfg.params is not None:
            self._scheduler = StagedQuantizationScheduler(
                self, cfg.params.activations_quant_start_epoch, cfg.params.weights_quant_start_epoch
            )

    @property
    def all_quantizations(self) -> dict[str, FakeQuantizer]:
        return {**self.weight_quantizers, **self.non_weight_quantizers}

    def set_activation_quantization(self, enabled: bool) -> None:
        for q in self.non_weight_quantizers.values():
            q.set_enabled(enabled)

    def set_weight_quantization(self, enabled: bool) -> None:
        for q in self.weight_quantizers.values():
            q.set_enabled(enabled)

    def enable_activation_quantization(self) -> None:
        self.set_activation_quantization(True)

    def disable_activation_quantization(self) -> None:
        self.set_activation_quantization(False)

    def enable_weight_quantization(self) -> None:
        self.set_weight_quantization(True)

    def disable_weight_quantization(self) -> None:
        self.set_weight_quantization(False)

    def compression_stage(self) -> CompressionStage:
        if not isinstance(self.scheduler, StagedQuantizationScheduler):
            return CompressionStage.FULLY_COMPRESSED
        s = self.scheduler
        a = s.current_epoch >= s.activations_start
        w = s.current_epoch >= s.weights_start
        if a and w:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED if (a or w) else CompressionStage.UNCOMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        def summary(qs: dict[str, FakeQuantizer]) -> dict[str, Any]:
            c: Counter[str] = Counter()
            for q in qs.values():
                c["symmetric" if q.spec.mode == "symmetric" else "asymmetric"] += 1
                c["signed" if q.signed else "unsigned"] += 1
                c["per_channel" if q.spec.per_channel else "per_tensor"] += 1
                c[f"{q.spec.num_bits}_bits"] += 1
                c["enabled"] += int(q.is_enabled)
            return {"total": len(qs), **dict(sorted(c.items()))}

        all_q = self.all_quantizations
        enabled = sum(q.is_enabled for q in all_q.values())
        stats = Statistics()
        stats.register(
            "quantization",
            {
                "weight_quantizers": summary(self.weight_quantizers),
                "activation_quantizers": summary(self.non_weight_quantizers),
                "weighted_modules": self.builder_state.get("weighted_modules", len(self.weight_quantizers)),
                "ratio_of_enabled_quantizations": enabled / len(all_q) if all_q else 0.0,
            },
        )
        report = self.builder_state.get("precision_init")
        if report is not None:  # HAWQ: what it chose and why (the full report is in builder_state)
            stats.register(
                "mixed_precision",
                {
                    "type": report["type"],
                    "compression_ratio": report["compression_ratio"],
                    "target_compression_ratio": report["target_compression_ratio"],
                    "weight_bits": {layer["id"]: layer["bits"] for layer in report["layers"]},
                    "hessian_trace": {layer["id"]: layer["hessian_trace"] for layer in report["layers"]},
                },
            )
        return stats

    def init_range(self) -> None:
        """Re-run range initialization with the build-time settings (the staged scheduler may call it)."""
        if self.context is None or not self.context.config.has_extra_struct(QuantizationRangeInitArgs):
            logger.error("init_range: no data loader registered")
            return
        initialize(self.context, self.cfg, self.setup, self.weight_quantizers, self.non_weight_quantizers)

    def strip_model(self, model: nn.Module) -> nn.Module:
        return strip_quantizers(model, self.setup)


def activation_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).startswith(ACTIVATIONS_ATTR + ".")]
