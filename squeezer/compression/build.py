"""Algorithm registry and the shared context a builder receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from squeezer.compression.config.models import CompressionConfigModel
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.graph.trace import TracedGraph

if TYPE_CHECKING:  # a type only: importing the quantization package here would import this module back
    from squeezer.compression.quantization.placement_policy import PlacementPolicy


@dataclass
class BuildContext:
    """What every algorithm builder needs: the traced model, the config and the init data."""

    traced: TracedGraph | None  # None when the model could not be traced (weights-only fallback)
    model: torch.nn.Module  # the compressed model being built (a GraphModule when traced)
    config: NNCFConfig
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]]
    placement: PlacementPolicy  # the runtime's quantizer placement, chosen once from the config
    builder_state: dict[str, Any] | None = None  # this algorithm's saved state when resuming
    original: torch.nn.Module | None = None  # the model as the user passed it (read only)
    trace_error: str | None = None
    verify_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # real data for export checks
    notes: list[str] = field(default_factory=list)

    @property
    def cfg(self) -> CompressionConfigModel:
        return self.config.model

    @property
    def should_init(self) -> bool:
        return self.builder_state is None

    @property
    def gm(self) -> fx.GraphModule:
        assert self.traced is not None
        return self.traced.gm

    def device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))
