"""The parameter types of NNCF 3.x's post-training API, by the same names and values.

Code written for `nncf.quantize` keeps working with `import squeezer.compression as nncf`: the enums
compare equal to NNCF's string values and `IgnoredScope` takes NNCF's fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from squeezer.compression.graph.scopes import RE_PREFIX


class ModelType(StrEnum):
    """What kind of network it is; TRANSFORMER switches on the outlier-aware rules (SmoothQuant, FP32
    residual sums, asymmetric activations), calibrates on the tokens the attention mask keeps, and
    skips fast bias correction (on MiniLM it cost more than it restored)."""

    TRANSFORMER = "transformer"


class QuantizationPreset(StrEnum):
    """PERFORMANCE: symmetric activations; MIXED: asymmetric activations (weights stay symmetric)."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class TargetDevice(StrEnum):
    ANY = "ANY"
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"
    CPU_SPR = "CPU_SPR"


class DropType(StrEnum):
    """How `max_drop` is measured: metric points (ABSOLUTE) or a fraction of the FP32 metric (RELATIVE)."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class QuantizationMode(StrEnum):
    """NNCF's low-precision floating-point modes; only INT8 (mode=None) is implemented here."""

    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class RangeEstimator(StrEnum):
    """How an activation quantizer's range is chosen from the calibration data.

    MSE: the clipping range with the smallest quantization error on the data (the default for CNNs);
    MINMAX: the observed extremes (the default for ModelType.TRANSFORMER, whose smoothed Linear inputs
    keep more with their full range); PERCENTILE: the 0.01 / 99.99 percentiles.
    """

    MINMAX = "min_max"
    MSE = "mse"
    PERCENTILE = "percentile"


@dataclass
class IgnoredScope:
    """Operations left in FP32: exact operation `names`, regular-expression `patterns` (re.search) and
    operation `types` ("linear", "conv2d", "matmul", ...). `validate=True` refuses entries that match
    nothing in the model."""

    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    subgraphs: list[object] = field(default_factory=list)
    validate: bool = True

    def to_scopes(self) -> list[str]:
        """The config's scope strings: names as they are, patterns and types as `{re}` patterns."""
        if self.subgraphs:
            raise ValueError("IgnoredScope.subgraphs is not supported; list the operations in names or patterns")
        types = [rf"{RE_PREFIX}/{re.escape(t.lower())}_\d+$" for t in self.types]
        return [*self.names, *(f"{RE_PREFIX}{p}" for p in self.patterns), *types]


@dataclass
class AdvancedSmoothQuantParameters:
    """SmoothQuant's migration strength per layer kind; a negative value switches it off for that kind.

    `matmul=None` (the default) searches each layer's alpha among `alpha_candidates` by the layer's own
    output error on the calibration data, instead of one alpha for the whole model.
    """

    matmul: float | None = None
    alpha_candidates: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.95)
    # how far each group's input range may be clipped, chosen by the same output error; (1.0,), the
    # default, never clips: on MiniLM the search measured no gain (0.9915 vs 0.9918 min cosine)
    clip_ratios: tuple[float, ...] = (1.0,)


@dataclass
class AdvancedQuantizationParameters:
    """Knobs beyond the defaults (the names follow NNCF's where NNCF has the same knob).

    activations_range_estimator: how activation ranges are chosen (None: MSE, MINMAX for transformers).
    smooth_quant_alphas: SmoothQuant settings (applied for ModelType.TRANSFORMER).
    cross_layer_equalization: equalize the channel ranges of conv/linear pairs joined by ReLU / max pooling.
    disable_bias_correction: skip bias correction altogether (ModelType.TRANSFORMER always skips it).
    bias_correction_subset_size: samples used by fast bias correction (at most subset_size).
    target_runtime: "onnxruntime" places quantizers where onnxruntime runs integer kernels; "openvino"
      (or None) uses NNCF's placement.
    """

    activations_range_estimator: RangeEstimator | None = None
    smooth_quant_alphas: AdvancedSmoothQuantParameters = field(default_factory=AdvancedSmoothQuantParameters)
    cross_layer_equalization: bool = True
    # transformers: error-compensating rounding of the smoothed Linears' weights. Off by default: on MiniLM
    # it gave 0.9964 on one sentence set and 0.89 on another while X^T X was mostly padding tokens' rows;
    # from the real tokens only (`tokens.py`) it no longer collapses but is no steady gain either:
    # 0.9964 vs 0.9970 and 0.9977 vs 0.9974 min cosine on the two sets at 128 tokens
    gptq: bool = False
    disable_bias_correction: bool = False
    # 32: on the 14 zoo CNNs at 224x224 (2 random models each) the output error was 1.04x that of 64
    # samples (median; 0.77x-1.12x) for 0.80x the time; 64 had been no worse than 128 on ResNet-18
    bias_correction_subset_size: int = 32
    target_runtime: str | None = None


@dataclass
class AdvancedAccuracyRestorerParameters:
    """max_num_iterations: the most validation passes the search may spend after the FP32 and INT8 ones;
    ranking_subset_size: validation samples whose outputs rank the quantizer groups."""

    max_num_iterations: int = 12
    ranking_subset_size: int = 64
