"""Typed pydantic models of the NNCF JSON config.

The JSON is parsed once into these models; the rest of the library only sees typed objects.
Strictness follows the NNCF schema: unknown keys are errors everywhere except at the top level
(training scripts keep their own keys there) and inside `initializer.range.params`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

RE_PREFIX = "{re}"


def _check_pattern(pattern: str) -> str:
    if RE_PREFIX in pattern:
        try:
            re.compile(pattern.replace(RE_PREFIX, ""))
        except re.error as exc:
            raise PydanticCustomError(
                "bad_regex",
                "invalid {re} regular expression '{pattern}': {reason}",
                {"pattern": pattern, "reason": str(exc)},
            ) from exc
    return pattern


def _as_list(value: Any) -> Any:
    """NNCF accepts a bare string wherever a list of scopes is expected."""
    return [value] if isinstance(value, str) else value


Scope = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    """Base of every section that rejects unknown keys, naming the allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = {f.alias or name for name, f in cls.model_fields.items()}
            unknown = [k for k in data if k not in allowed]
            if unknown:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key '{key}'; allowed keys: {allowed}",
                    {"key": unknown[0], "allowed": ", ".join(sorted(allowed))},
                )
        return data


class Scoped(Strict):
    """Sections that accept ignored/target scopes (every algorithm but knowledge distillation)."""

    ignored_scopes: list[Scope] | None = None
    target_scopes: list[Scope] | None = None
    validate_scopes: bool = True

    @field_validator("ignored_scopes", "target_scopes", mode="before")
    @classmethod
    def _scopes_as_list(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("ignored_scopes", "target_scopes")
    @classmethod
    def _valid_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            _check_pattern(pattern)
        return value


# ---------------------------------------------------------------------------------------------- inputs


class InputInfo(Strict):
    sample_size: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    # NNCF maps "long" to int64 and every other string to float32; keep that leniency.
    type: str = "float"
    filler: Literal["ones", "zeros", "random"] = "ones"
    keyword: str | None = None


# ---------------------------------------------------------------------------------------------- quantization

Bits = Annotated[int, Field(ge=2, le=8)]
RangeType = Literal["mixed_min_max", "min_max", "mean_min_max", "threesigma", "percentile", "mean_percentile"]


class QuantizerGroup(Scoped):
    mode: Literal["symmetric", "asymmetric"] | None = None
    bits: Bits | None = None
    signed: bool | None = None
    per_channel: bool | None = None
    logarithm_scale: bool = False
    validate_scopes: bool = True


class ActivationsGroup(QuantizerGroup):
    unified_scale_ops: list[list[str]] | None = None


class RangeInit(Strict):
    num_init_samples: Annotated[int, Field(ge=0)] = 256
    type: RangeType = "mixed_min_max"
    params: dict[str, float] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _percentiles(cls, value: dict[str, float]) -> dict[str, float]:
        for key in ("min_percentile", "max_percentile"):
            if key in value and not 0.0 <= value[key] <= 100.0:
                raise PydanticCustomError(
                    "percentile", "{key} must be within [0, 100], got {v}", {"key": key, "v": value[key]}
                )
        return value


class PerLayerRangeInit(RangeInit, Scoped):
    target_quantizer_group: Literal["activations", "weights"] | None = None

    @model_validator(mode="after")
    def _needs_scope(self) -> PerLayerRangeInit:
        if self.target_scopes is None and self.ignored_scopes is None:
            raise PydanticCustomError(
                "per_layer_scope", "a per-layer range init entry needs target_scopes or ignored_scopes", {}
            )
        return self


class BatchnormAdaptation(Strict):
    num_bn_adaptation_samples: Annotated[int, Field(ge=0)] = 2000


class PrecisionInit(Strict):
    type: Literal["hawq", "autoq", "manual"] = "manual"
    bits: list[Bits] | None = None
    num_data_points: Annotated[int, Field(ge=1)] = 100
    iter_number: Annotated[int, Field(ge=0)] | None = None
    tolerance: float = 1e-4
    compression_ratio: Annotated[float, Field(gt=0)] | None = None
    eval_subset_ratio: Annotated[float, Field(gt=0, le=1)] = 1.0
    warmup_iter_number: Annotated[int, Field(ge=0)] = 20
    # [bits, quantizer-id substring] pairs; JSON has no tuples, so they are checked by hand.
    bitwidth_per_scope: list[list[int | str]] = Field(default_factory=list)
    traces_per_layer_path: str | None = None
    dump_init_precision_data: bool = False
    bitwidth_assignment_mode: Literal["strict", "liberal"] = "liberal"

    @field_validator("bitwidth_per_scope")
    @classmethod
    def _pairs(cls, value: list[list[int | str]]) -> list[list[int | str]]:
        for pair in value:
            ok = len(pair) == 2 and isinstance(pair[0], int) and isinstance(pair[1], str)
            if not ok or not 2 <= int(pair[0]) <= 8:
                raise PydanticCustomError(
                    "bitwidth_pair", "each entry must be [bits (2-8), scope string], got {pair}", {"pair": pair}
                )
        return value


class QuantizationInitializer(Strict):
    range: RangeInit | list[PerLayerRangeInit] | None = None
    batchnorm_adaptation: BatchnormAdaptation | None = None
    precision: PrecisionInit | None = None


class OverrideInitializer(Strict):
    range: RangeInit | None = None


class QuantizerOverride(Strict):
    mode: Literal["symmetric", "asymmetric"] | None = None
    bits: Bits | None = None
    signed: bool | None = None
    per_channel: bool | None = None
    initializer: OverrideInitializer | None = None


class ScopeOverrides(Strict):
    weights: dict[str, QuantizerOverride] = Field(default_factory=dict)
    activations: dict[str, QuantizerOverride] = Field(default_factory=dict)

    @field_validator("weights", "activations")
    @classmethod
    def _valid_keys(cls, value: dict[str, QuantizerOverride]) -> dict[str, QuantizerOverride]:
        for pattern in value:
            _check_pattern(pattern)
        return value


class StagedQuantizationParams(Strict):
    activations_quant_start_epoch: Annotated[int, Field(ge=0)] = 1
    weights_quant_start_epoch: Annotated[int, Field(ge=0)] = 1
    # Read by training scripts, not by the library; kept for compatibility.
    batch_multiplier: Annotated[int, Field(ge=1)] = 1
    base_lr: float = 1e-3
    base_wd: float = 1e-5
    lr_poly_drop_start_epoch: int | None = None
    lr_poly_drop_duration_epochs: int = 30
    disable_wd_start_epoch: int | None = None


class QuantizationConfig(Scoped):
    algorithm: Literal["quantization"]
    preset: Literal["performance", "mixed"] | None = None
    weights: QuantizerGroup = Field(default_factory=QuantizerGroup)
    activations: ActivationsGroup = Field(default_factory=ActivationsGroup)
    quantize_inputs: bool = True
    quantize_outputs: bool = False
    initializer: QuantizationInitializer = Field(default_factory=QuantizationInitializer)
    scope_overrides: ScopeOverrides = Field(default_factory=ScopeOverrides)
    export_to_onnx_standard_ops: bool = False
    overflow_fix: Literal["enable", "disable", "first_layer_only"] = "enable"
    # Squeezer's addition: subgraphs left in FP32 whatever the scopes say, as NNCF 3.x's post-training
    # quantization does (quantization/ignored_patterns.py); `quantize` sets ["se_block"] for CNNs
    ignored_patterns: list[Literal["se_block"]] = Field(default_factory=list)
    params: StagedQuantizationParams | None = None
    compression_lr_multiplier: float | None = None

    @property
    def is_staged(self) -> bool:
        """NNCF: a non-empty `params` object switches on the staged scheduler; `{}` does not."""
        return bool(self.params is not None and self.params.model_fields_set)


# ---------------------------------------------------------------------------------------------- sparsity


class SparsityParams(Strict):
    sparsity_level_setting_mode: str = "global"
    schedule: Literal["polynomial", "exponential", "adaptive", "multistep"] | None = None
    sparsity_target: Annotated[float, Field(ge=0, lt=1)] = 0.5
    sparsity_target_epoch: Annotated[int, Field(ge=0)] = 90
    sparsity_freeze_epoch: Annotated[int, Field(ge=0)] = 100
    update_per_optimizer_step: bool = False
    steps_per_epoch: Annotated[int, Field(ge=1)] | None = None
    multistep_steps: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [90])
    multistep_sparsity_levels: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=lambda: [0.1, 0.5])
    patience: Annotated[int, Field(ge=1)] = 1
    power: float = 0.9
    concave: bool = True

    @model_validator(mode="after")
    def _multistep_lengths(self) -> SparsityParams:
        if len(self.multistep_sparsity_levels) != len(self.multistep_steps) + 1:
            raise PydanticCustomError(
                "multistep",
                "multistep_sparsity_levels needs one more entry than multistep_steps ({n} steps, {m} levels)",
                {"n": len(self.multistep_steps), "m": len(self.multistep_sparsity_levels)},
            )
        return self


class MagnitudeSparsityParams(SparsityParams):
    weight_importance: Literal["abs", "normed_abs"] = "normed_abs"


class MagnitudeSparsityConfig(Scoped):
    algorithm: Literal["magnitude_sparsity"]
    sparsity_init: Annotated[float, Field(ge=0, lt=1)] = 0.0
    params: MagnitudeSparsityParams = Field(default_factory=MagnitudeSparsityParams)
    initializer: QuantizationInitializer | None = None


class RBSparsityConfig(Scoped):
    algorithm: Literal["rb_sparsity"]
    sparsity_init: Annotated[float, Field(ge=0, lt=1)] = 0.0
    params: SparsityParams = Field(default_factory=SparsityParams)
    compression_lr_multiplier: float | None = None


class ConstSparsityConfig(Scoped):
    algorithm: Literal["const_sparsity"]


# ---------------------------------------------------------------------------------------------- pruning


class LegrParams(Strict):
    generations: Annotated[int, Field(ge=1)] = 400
    train_steps: Annotated[int, Field(ge=1)] = 200
    max_pruning: Annotated[float, Field(gt=0, lt=1)] | None = None
    random_seed: int = 42
    population_size: Annotated[int, Field(ge=1)] = 64
    num_samples: Annotated[int, Field(ge=1)] = 16
    mutate_percent: Annotated[float, Field(ge=0, le=1)] = 0.1
    scale_sigma: float = 1.0


class FilterPruningParams(Strict):
    schedule: Literal["exponential", "exponential_with_bias", "baseline"] = "exponential"
    pruning_target: Annotated[float, Field(ge=0, lt=1)] | None = None
    pruning_flops_target: Annotated[float, Field(gt=0, lt=1)] | None = None
    pruning_steps: Annotated[int, Field(ge=0)] = 100
    num_init_steps: Annotated[int, Field(ge=0)] = 0
    filter_importance: Literal["L2", "L1", "geometric_median"] = "L2"
    interlayer_ranking_type: Literal["unweighted_ranking", "learned_ranking"] = "unweighted_ranking"
    all_weights: bool | None = None
    prune_first_conv: bool | None = None
    prune_downsample_convs: bool | None = None
    prune_batch_norms: bool = True
    legr_params: LegrParams = Field(default_factory=LegrParams)
    save_ranking_coeffs_path: str | None = None
    load_ranking_coeffs_path: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> FilterPruningParams:
        if self.pruning_target and self.pruning_flops_target:
            raise PydanticCustomError("pruning_target", "set only one of pruning_target and pruning_flops_target", {})
        if self.interlayer_ranking_type == "learned_ranking" and self.all_weights is False:
            raise PydanticCustomError("learned_ranking", "learned_ranking needs all_weights true (or unset)", {})
        return self


class FilterPruningConfig(Scoped):
    algorithm: Literal["filter_pruning"]
    pruning_init: Annotated[float, Field(ge=0, lt=1)] = 0.0
    params: FilterPruningParams = Field(default_factory=FilterPruningParams)
    initializer: QuantizationInitializer | None = None


class KnowledgeDistillationConfig(Strict):
    algorithm: Literal["knowledge_distillation"]
    type: Literal["mse", "softmax"]
    scale: float = 1.0
    temperature: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _temperature_softmax_only(self) -> KnowledgeDistillationConfig:
        if self.type == "mse" and self.temperature is not None:
            raise PydanticCustomError(
                "kd_temperature", "temperature is only allowed with type 'softmax', not 'mse'", {}
            )
        return self


AlgorithmConfig = Annotated[
    QuantizationConfig
    | MagnitudeSparsityConfig
    | RBSparsityConfig
    | ConstSparsityConfig
    | FilterPruningConfig
    | KnowledgeDistillationConfig,
    Field(discriminator="algorithm"),
]
# every member has a row in squeezer.compression.registry (checked when that module loads)


# ---------------------------------------------------------------------------------------------- accuracy-aware


class AccuracyAwareParams(Strict):
    maximal_relative_accuracy_degradation: Annotated[float, Field(ge=0)] | None = None
    maximal_absolute_accuracy_degradation: Annotated[float, Field(ge=0)] | None = None
    maximal_total_epochs: Annotated[int, Field(ge=1)] = 10000
    validate_every_n_epochs: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _exactly_one_degradation(self) -> AccuracyAwareParams:
        given = [
            k
            for k in ("maximal_relative_accuracy_degradation", "maximal_absolute_accuracy_degradation")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise PydanticCustomError(
                "degradation",
                "set exactly one of maximal_relative_accuracy_degradation and "
                "maximal_absolute_accuracy_degradation (got {n})",
                {"n": len(given)},
            )
        return self


class EarlyExitParams(AccuracyAwareParams):
    maximal_total_epochs: Annotated[int, Field(ge=1)]


class AdaptiveCompressionParams(AccuracyAwareParams):
    initial_training_phase_epochs: Annotated[int, Field(ge=0)]
    patience_epochs: Annotated[int, Field(ge=1)]
    minimal_compression_rate_step: Annotated[float, Field(gt=0, lt=1)] = 0.025
    initial_compression_rate_step: Annotated[float, Field(gt=0, lt=1)] = 0.1
    compression_rate_step_reduction_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    lr_reduction_factor: Annotated[float, Field(gt=0, le=1)] | None = 0.5


class EarlyExitConfig(Strict):
    mode: Literal["early_exit"]
    params: EarlyExitParams


class AdaptiveCompressionConfig(Strict):
    mode: Literal["adaptive_compression_level"]
    params: AdaptiveCompressionParams


AccuracyAwareConfig = Annotated[EarlyExitConfig | AdaptiveCompressionConfig, Field(discriminator="mode")]


# ---------------------------------------------------------------------------------------------- top level

TargetDevice = Literal["ANY", "CPU", "GPU", "NPU", "VPU", "TRIAL", "CPU_SPR"]


class CompressionConfigModel(BaseModel):
    """The whole config. Unknown top-level keys are kept (training scripts store their own)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    input_info: list[InputInfo] | None = None
    target_device: TargetDevice = "ANY"
    # Squeezer's addition: the runtime the export is for. "onnxruntime" quantizes the inputs its
    # integer kernels need (quantization/placement_policy.py picks that placement)
    target_runtime: Literal["onnxruntime", "openvino"] | None = None
    # Squeezer's addition: "transformer" gives BERT-like models the post-training rules at range init
    # (SmoothQuant, min-max ranges, bias correction) and, unless target_runtime says otherwise, the
    # onnxruntime placement that leaves residual and embedding sums FP32
    model_type: Literal["transformer"] | None = None
    compression: list[AlgorithmConfig] = Field(default_factory=list)
    accuracy_aware_training: AccuracyAwareConfig | None = None
    compression_lr_multiplier: float | None = None
    disable_shape_matching: bool | None = None
    log_dir: str = "."
    ignored_scopes: list[Scope] | None = None
    target_scopes: list[Scope] | None = None
    scopes_without_shape_matching: list[str] = Field(default_factory=list)

    @field_validator("input_info", "compression", mode="before")
    @classmethod
    def _object_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("ignored_scopes", "target_scopes", mode="before")
    @classmethod
    def _scopes_as_list(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("ignored_scopes", "target_scopes")
    @classmethod
    def _valid_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            _check_pattern(pattern)
        return value

    @field_validator("compression")
    @classmethod
    def _unique_algorithms(cls, value: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for algo in value:
            if algo.algorithm in seen:
                raise PydanticCustomError(
                    "duplicate_algorithm",
                    "algorithm '{name}' appears more than once; each algorithm may be configured once",
                    {"name": algo.algorithm},
                )
            seen.add(algo.algorithm)
        return value

    @property
    def placement_runtime(self) -> str | None:
        """The runtime whose quantizer placement applies: `target_runtime`, else onnxruntime's for
        transformers (their residual sums' outliers stay FP32), else NNCF's (None)."""
        if self.target_runtime is not None:
            return self.target_runtime
        return "onnxruntime" if self.model_type == "transformer" else None

    def algorithm(self, name: str) -> Any:
        """The section of algorithm `name`, or None."""
        return next((a for a in self.compression if a.algorithm == name), None)
