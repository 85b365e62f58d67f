"""The controller protocol every algorithm implements, its scheduler, statistics and the composite."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from squeezer.compression.export.formats import SaveFormat, export_as, export_inputs
from squeezer.compression.registry import priority
from squeezer.errors import ExportError

if TYPE_CHECKING:
    from squeezer.compression.build import BuildContext


class CompressionStage(IntEnum):
    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2

    def __add__(self, other: object) -> CompressionStage:
        """NNCF folds children's stages with '+': equal stays, different means partial."""
        if not isinstance(other, CompressionStage):
            return NotImplemented
        return self if self == other else CompressionStage.PARTIALLY_COMPRESSED


class CompressionScheduler:
    """Counts epochs and steps. Call `epoch_step()` at the start of each epoch, `step()` per batch."""

    def __init__(self) -> None:
        self.current_epoch = -1
        self.current_step = -1

    def step(self, next_step: int | None = None) -> None:
        self.current_step = self.current_step + 1 if next_step is None else next_step

    def epoch_step(self, next_epoch: int | None = None) -> None:
        self.current_epoch = self.current_epoch + 1 if next_epoch is None else next_epoch

    def get_state(self) -> dict[str, Any]:
        return {"current_step": self.current_step, "current_epoch": self.current_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        self.current_step = state["current_step"]
        self.current_epoch = state["current_epoch"]


class StubScheduler(CompressionScheduler):
    """What `disable_scheduler()` installs: counters only, compression level left alone."""


class Statistics:
    """Per-algorithm statistics: `stats.quantization` etc., `to_dict()`, and a printable table."""

    def __init__(self, sections: dict[str, dict[str, Any]] | None = None) -> None:
        self._sections: dict[str, dict[str, Any]] = dict(sections or {})

    def register(self, name: str, values: dict[str, Any]) -> None:
        self._sections[name] = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._sections.get(name)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(self._sections.items())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._sections)

    def to_str(self) -> str:
        blocks = []
        for name, values in self._sections.items():
            rows = list(_flatten(values))
            width = max((len(k) for k, _ in rows), default=10)
            line = "+" + "-" * (width + 2) + "+" + "-" * 22 + "+"
            body = [f"| {k:<{width}} | {_fmt(v):>20} |" for k, v in rows]
            blocks.append("\n".join([f"Statistics of {name}", line, *body, line]))
        return "\n\n".join(blocks)

    __str__ = to_str


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in values.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


class CompressionController:
    """Base controller: zero loss, counting scheduler, fully compressed. Algorithms override parts."""

    name = "none"

    def __init__(self, model: nn.Module, context: BuildContext | None = None) -> None:
        self.model = model
        self.context = context
        self._scheduler: CompressionScheduler = CompressionScheduler()
        self.builder_state: dict[str, Any] = {}

    # ---------------------------------------------------------------------------- training
    @property
    def scheduler(self) -> CompressionScheduler:
        return self._scheduler

    def loss(self) -> torch.Tensor:
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return torch.zeros([], device=device)

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    @property
    def compression_rate(self) -> float | None:
        return None

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        raise NotImplementedError(f"{self.name} has no settable compression rate")

    @property
    def maximal_compression_rate(self) -> float:
        return 1.0

    def disable_scheduler(self) -> None:
        state = self._scheduler.get_state()
        self._scheduler = StubScheduler()
        self._scheduler.load_state(state)

    def distributed(self) -> None:
        """Call after wrapping the model in DistributedDataParallel."""

    def prepare_for_export(self) -> None:
        """Hook run by export_model before the graph is written."""

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        return Statistics()

    # ---------------------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        return {
            self.name: {
                "loss_state": None,
                "scheduler_state": self.scheduler.get_state(),
                "compression_stage": int(self.compression_stage()),
            }
        }

    def load_state(self, state: dict[str, Any]) -> None:
        own = state.get(self.name)
        if own is not None:
            self.scheduler.load_state(own["scheduler_state"])

    def get_compression_state(self) -> dict[str, Any]:
        """JSON-serializable; with the state_dict it rebuilds this compressed model in a fresh process."""
        return {"builder_state": {self.name: self.builder_state}, "ctrl_state": self.get_state()}

    # ---------------------------------------------------------------------------- output
    def strip_model(self, model: nn.Module) -> nn.Module:
        return model

    def export_source(self, model: nn.Module) -> nn.Module:
        """Turn a copy of the compressed model into what the ONNX file is made from (pruning cuts
        channels out here); most algorithms export as they train."""
        return model

    def strip(self, do_copy: bool = True) -> nn.Module:
        """The model with training-only machinery folded away (see each algorithm)."""
        model = copy.deepcopy(self.model) if do_copy else self.model
        return self.strip_model(model)

    def export_model(
        self,
        save_path: str | Path,
        save_format: str | None = None,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        model_args: Any = None,
        verify: bool = True,
    ) -> Path:
        """Write standard ONNX (QuantizeLinear/DequantizeLinear, int8 weights, BN folded) and check it
        in onnxruntime against the torch model; `save_format="openvino"` writes OpenVINO IR (`.xml` and
        `.bin`) converted from that ONNX by OpenVINO and checked on its CPU plugin."""
        self.prepare_for_export()
        fmt = SaveFormat.parse(save_format)
        if self.context is None:
            raise ExportError("this controller has no example inputs to export with")
        inputs = export_inputs(self.context.example_inputs, model_args)
        return export_as(
            self.export_source(copy.deepcopy(self.model)),
            save_path,
            fmt,
            inputs,
            input_names=input_names,
            output_names=output_names,
            verify=verify,
            verify_inputs=self.context.verify_inputs,
        )

    @property
    def child_ctrls(self) -> list[CompressionController]:
        return [self]


class CompositeController(CompressionController):
    """Several algorithms on one model: losses summed, statistics merged, stage = least compressed."""

    name = "composite"

    def __init__(self, model: nn.Module, children: list[CompressionController]) -> None:
        super().__init__(model)
        self.children = children
        self._scheduler = _CompositeScheduler(children)

    @property
    def child_ctrls(self) -> list[CompressionController]:
        return list(self.children)

    def loss(self) -> torch.Tensor:
        return sum((c.loss() for c in self.children), start=super().loss())

    def compression_stage(self) -> CompressionStage:
        stages = [c.compression_stage() for c in self.children]
        result = stages[0]
        for s in stages[1:]:
            result = result + s
        return result

    @property
    def compression_rate(self) -> float | None:
        rates = [c.compression_rate for c in self.children if c.compression_rate is not None]
        return sum(rates) / len(rates) if rates else None

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        settable = [c for c in self.children if c.compression_rate is not None]
        if len(settable) != 1:
            raise NotImplementedError("the compression rate can be set when exactly one algorithm has one")
        settable[0].compression_rate = value

    @property
    def maximal_compression_rate(self) -> float:
        return min(c.maximal_compression_rate for c in self.children)

    def disable_scheduler(self) -> None:
        for c in self.children:
            c.disable_scheduler()

    def distributed(self) -> None:
        for c in self.children:
            c.distributed()

    def prepare_for_export(self) -> None:
        for c in self.children:
            c.prepare_for_export()

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        merged = Statistics()
        for c in self.children:
            for name, values in c.statistics(quickly_collected_only):
                merged.register(name, values)
        return merged

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for c in self.children:
            state.update(c.get_state())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        for c in self.children:
            c.load_state(state)
        # the composite's own counters are not in the state (it is the union of the children's)
        first = self.children[0].scheduler
        self._scheduler.current_epoch, self._scheduler.current_step = first.current_epoch, first.current_step

    def get_compression_state(self) -> dict[str, Any]:
        return {"builder_state": {c.name: c.builder_state for c in self.children}, "ctrl_state": self.get_state()}

    def strip_model(self, model: nn.Module) -> nn.Module:
        for c in self._by_priority():
            model = c.strip_model(model)
        return model

    def export_source(self, model: nn.Module) -> nn.Module:
        for c in self._by_priority():
            model = c.export_source(model)
        return model

    def _by_priority(self) -> list[CompressionController]:
        """Pruning before sparsity before quantization: the order their ops apply to a weight."""
        return sorted(self.children, key=lambda c: priority(c.name))


class _CompositeScheduler(CompressionScheduler):
    def __init__(self, children: list[CompressionController]) -> None:
        super().__init__()
        self._children = children

    def step(self, next_step: int | None = None) -> None:
        super().step(next_step)
        for c in self._children:
            c.scheduler.step(next_step)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        for c in self._children:
            c.scheduler.epoch_step(next_epoch)

    def get_state(self) -> dict[str, Any]:
        return {
            "current_step": self.current_step,
            "current_epoch": self.current_epoch,
            "children": [c.scheduler.get_state() for c in self._children],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        for c, s in zip(self._children, state.get("children", []), strict=False):
            c.scheduler.load_state(s)
