"""The one home of every algorithm's metadata (as torchao keys its transforms: a registry, not isinstance ladders).

Each algorithm is one `Algorithm` row, keyed by its config class (the pydantic model in `config.models`)
and by its name, which is that model's `algorithm` tag: the name NNCF configs use. The row says in what
order the algorithm applies to a weight, whether the Adaptive Compression Level loop may drive its rate,
which module implements it (imported lazily, so that validating a config never needs torch) and, once that
module is imported, its builder. Build, the composite controller, the accuracy-aware loop, lazy loading and
the controllers' names all read it; none keeps its own list.

This module needs pydantic only: the API process reads it without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from pydantic import BaseModel

from squeezer.compression.config.models import (
    AlgorithmConfig,
    ConstSparsityConfig,
    FilterPruningConfig,
    KnowledgeDistillationConfig,
    MagnitudeSparsityConfig,
    QuantizationConfig,
    RBSparsityConfig,
)

if TYPE_CHECKING:
    from squeezer.compression.build import BuildContext
    from squeezer.compression.controller import CompressionController

    Builder = Callable[[BuildContext, Any], CompressionController]
else:
    Builder = Callable[..., Any]

Family = Literal["quantization", "sparsity", "pruning", "distillation"]
UNKNOWN_PRIORITY = 100  # after every known algorithm


@dataclass
class Algorithm:
    config: type[BaseModel]  # its section of `compression`; the `algorithm` tag there is the name
    priority: int  # application order on one weight, as NNCF applies them: pruning mask, sparsity mask, quantizer
    family: Family
    module: str  # importing it registers the builder
    adaptive: bool = False  # the Adaptive Compression Level loop may search its rate
    builder: Builder | None = None

    @property
    def name(self) -> str:
        (tag,) = get_args(self.config.model_fields["algorithm"].annotation)
        return str(tag)

    def load(self) -> Builder:
        """The builder, importing the implementing module on first use."""
        if self.builder is None:
            importlib.import_module(self.module)
        if self.builder is None:
            raise RuntimeError(f"{self.module} did not register a builder for {self.name!r}")
        return self.builder


_ROWS = (
    Algorithm(QuantizationConfig, 11, "quantization", "squeezer.compression.quantization.algorithm"),
    Algorithm(MagnitudeSparsityConfig, 3, "sparsity", "squeezer.compression.sparsity.magnitude", adaptive=True),
    Algorithm(RBSparsityConfig, 3, "sparsity", "squeezer.compression.sparsity.rb", adaptive=True),
    Algorithm(ConstSparsityConfig, 3, "sparsity", "squeezer.compression.sparsity.const"),
    Algorithm(FilterPruningConfig, 2, "pruning", "squeezer.compression.pruning.algorithm", adaptive=True),
    Algorithm(KnowledgeDistillationConfig, 5, "distillation", "squeezer.compression.distillation.kd"),
)
ALGORITHMS: dict[str, Algorithm] = {row.name: row for row in _ROWS}
BY_CONFIG: dict[type[BaseModel], Algorithm] = {row.config: row for row in _ROWS}

ALGORITHM_NAMES = tuple(ALGORITHMS)
ADAPTIVE_ALGORITHMS = tuple(name for name, row in ALGORITHMS.items() if row.adaptive)
SPARSITY_ALGORITHMS = frozenset(name for name, row in ALGORITHMS.items() if row.family == "sparsity")


def _union_members() -> set[type[BaseModel]]:
    union, *_ = get_args(AlgorithmConfig)  # Annotated[A | B | ..., Field(discriminator=...)]
    return set(get_args(union))


if set(BY_CONFIG) != _union_members():  # the parser and the registry must know the same algorithms
    raise RuntimeError(
        f"config.models.AlgorithmConfig and the registry disagree: "
        f"{sorted(c.__name__ for c in _union_members() ^ set(BY_CONFIG))}"
    )


def algorithm(key: str | type[BaseModel]) -> Algorithm:
    """The row of an algorithm, by name or by config class."""
    return ALGORITHMS[key] if isinstance(key, str) else BY_CONFIG[key]


def name_of(config: type[BaseModel]) -> str:
    """The NNCF name of the algorithm configured by `config` (a controller's `name`)."""
    return BY_CONFIG[config].name


def priority(name: str) -> int:
    row = ALGORITHMS.get(name)
    return row.priority if row is not None else UNKNOWN_PRIORITY


def load_algorithms() -> None:
    """Import every implementation, registering its builder (idempotent)."""
    for row in _ROWS:
        importlib.import_module(row.module)


_B = TypeVar("_B", bound=Callable[..., Any])


def register_algorithm(config: type[BaseModel]) -> Callable[[_B], _B]:
    """Decorate an algorithm's builder: `@register_algorithm(QuantizationConfig)`."""

    def wrap(builder: _B) -> _B:
        BY_CONFIG[config].builder = builder
        return builder

    return wrap
