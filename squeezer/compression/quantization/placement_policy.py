"""Which runtime the quantizers are placed for, chosen once per model from the config.

NNCF's placement quantizes what a conv, linear, matmul, add or pooling reads; the QDQ layout OpenVINO
fuses. onnxruntime runs an op as an integer kernel only when its inputs come from a DequantizeLinear
and its output goes to a QuantizeLinear, so its placement quantizes more (gates, products, concats,
split halves) and less (sums it would run in FP32 anyway): see onnxruntime_rules.py. A policy answers
each question where the two differ, so placement reads the answer instead of testing the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import fx, nn

from squeezer.compression.config.models import CompressionConfigModel
from squeezer.compression.quantization.gated_activations import split_gated_activations
from squeezer.compression.quantization.onnxruntime_rules import float_adds, onnxruntime_ports

_ONNXRUNTIME_DEVICES = ("ANY", "CPU")  # elsewhere (GPU, NPU, ...) the file is not run by onnxruntime's CPU kernels


@dataclass(frozen=True)
class PlacementPolicy:
    """The runtime-specific answers of quantizer placement (the field docs say what each one changes)."""

    name: str
    # SiLU / Hardswish written out as x * gate(x) before naming, so the gate and the product get quantizers
    writes_out_gated_activations: bool
    # gates, products and feature-map LayerNorms read quantized inputs (onnxruntime_ports)
    quantizes_fusion_inputs: bool
    # sums whose readers do not quantize them get no input quantizers (float_adds)
    leaves_float_adds: bool
    # a concat's output and a part of a split are quantized producers; a concat's branches share the
    # concat's quantizer (QLinearConcat copies bytes)
    quantizes_concats_and_splits: bool
    # a signed quantizer that a concat reads exports as int8 (zero point 0), not as uint8 shifted by 128:
    # OpenVINO fuses the dequantization after such a concat into the next quantizer only without the
    # shift's subtraction; onnxruntime's QLinear kernels want one type in and out (uint8)
    stores_signed_concat_inputs_as_int8: bool
    # a tensor read by a scale-preserving chain and something else is quantized again before the chain
    requantizes_branching_chains: bool

    def prepare_graph(self, gm: fx.GraphModule) -> None:
        """Rewrite the traced graph as this runtime's placement expects it (before nodes are named)."""
        if self.writes_out_gated_activations:
            split_gated_activations(gm)

    def extra_ports(self, node: fx.Node, modules: dict[str, nn.Module]) -> list[int]:
        """Input ports of `node` to quantize beyond NNCF's rule (empty: none)."""
        return onnxruntime_ports(node, modules) if self.quantizes_fusion_inputs else []

    def fp32_adds(
        self,
        gm: fx.GraphModule,
        modules: dict[str, nn.Module],
        quantizes_input: Callable[[fx.Node], bool],
        passes_scale: Callable[[fx.Node], bool],
    ) -> set[fx.Node]:
        """The sums whose inputs stay unquantized (this runtime would run them in FP32 anyway)."""
        if not self.leaves_float_adds:
            return set()
        return float_adds(gm, modules, quantizes_input, passes_scale)


NNCF_PLACEMENT = PlacementPolicy(
    name="nncf",
    writes_out_gated_activations=False,
    quantizes_fusion_inputs=False,
    leaves_float_adds=False,
    quantizes_concats_and_splits=False,
    stores_signed_concat_inputs_as_int8=True,
    requantizes_branching_chains=False,
)
ONNXRUNTIME_PLACEMENT = PlacementPolicy(
    name="onnxruntime",
    writes_out_gated_activations=True,
    quantizes_fusion_inputs=True,
    leaves_float_adds=True,
    quantizes_concats_and_splits=True,
    stores_signed_concat_inputs_as_int8=False,
    requantizes_branching_chains=True,
)


def placement_policy(config: CompressionConfigModel) -> PlacementPolicy:
    """onnxruntime's placement for `target_runtime: onnxruntime` (or a transformer without a target
    runtime) on a device onnxruntime's CPU kernels serve; NNCF's otherwise."""
    if config.placement_runtime == "onnxruntime" and config.target_device in _ONNXRUNTIME_DEVICES:
        return ONNXRUNTIME_PLACEMENT
    return NNCF_PLACEMENT


@dataclass(frozen=True)
class PlacementOptions:
    """What placement takes from outside the quantization section: the device, the global scopes and the
    runtime's policy."""

    target_device: str
    global_ignored: list[str] | None
    global_target: list[str] | None
    policy: PlacementPolicy = NNCF_PLACEMENT
