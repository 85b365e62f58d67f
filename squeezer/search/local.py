"""`search_in_process`: the service's search for users who keep their own training loop.

The same candidates, the same successive halving and the same result type as a service search, run
one after another in this process with the caller's functions, in NNCF's accuracy-aware-loop form:
`train_epoch_fn(compression_ctrl, model, epoch, optimizer, lr_scheduler)` and
`validate_fn(model, epoch) -> metric` (higher is better). One difference from NNCF's loop: since
each candidate is a new compressed model, `configure_optimizers_fn(model)` takes the model whose
parameters it optimizes.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer.compression import (
    NNCFConfig,
    create_accuracy_aware_training_loop,
    create_compressed_model,
    register_default_init_args,
)
from squeezer.compression.accuracy_aware.records import EpochRecord
from squeezer.compression.api import controller_of
from squeezer.compression.export.onnx_export import export_onnx
from squeezer.compression.init_args import wrap_dataloader_for_init
from squeezer.compression.ptq import (
    AdvancedQuantizationParameters,
    Dataset,
    DropType,
    quantize,
    quantize_with_accuracy_control,
)
from squeezer.runtime.compare import measure
from squeezer.search.candidates import candidate_configs, is_post_training, training_candidates
from squeezer.search.front import common_latency_scale, pareto_front, recommendation
from squeezer.search.result import CandidateOutcome, SearchResult, compression_algorithms
from squeezer.search.spec import (
    DEADLINE_REASON,
    AccuracyBudget,
    CandidateSpec,
    ComputeBudget,
    Objective,
    Runtime,
    SearchSettings,
)

logger = logging.getLogger(__name__)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def search_in_process(
    model: nn.Module,
    init_loader: Any,
    train_epoch_fn: Callable[..., Any],
    validate_fn: Callable[[nn.Module, int], float],
    configure_optimizers_fn: Callable[[nn.Module], tuple[Any, Any]],
    example_input: torch.Tensor,
    *,
    budget: float | AccuracyBudget = 1.0,
    objective: Objective = "latency",
    runtime: Runtime = "onnxruntime",
    candidates: Sequence[str | CandidateSpec] | None = None,
    max_total_epochs: int | None = None,
    max_wall_time_s: float | None = None,
    epochs_per_candidate: int = 3,
    early_stopping: bool = True,
    criterion: Any = None,
    workdir: str | Path | None = None,
) -> SearchResult:
    """Compress `model` with each candidate (default: `DEFAULT_CANDIDATES`) and return every outcome,
    the Pareto front and the recommended candidate, latency measured in `runtime` on batches shaped
    like `example_input`. Exported files stay in `workdir` (`<workdir>/<candidate>/model.onnx`);
    without one they go to a temporary folder that is removed, and the outcomes keep the numbers.
    `budget` is absolute metric points, or an `AccuracyBudget`. `init_loader` feeds range init and
    BatchNorm adaptation (`register_default_init_args`); `criterion` is what HAWQ differentiates.
    """
    accuracy = (
        budget if isinstance(budget, AccuracyBudget) else AccuracyBudget(maximal_absolute_accuracy_degradation=budget)
    )
    settings = SearchSettings(
        accuracy=accuracy,
        objective=objective,
        runtime=runtime,
        batch_size=int(example_input.shape[0]),
        candidates=list(candidates) if candidates is not None else None,
        budget=ComputeBudget(max_total_epochs=max_total_epochs, max_wall_time_s=max_wall_time_s),
        early_stopping=early_stopping,
    )
    candidate_configs(settings.candidates, None, accuracy, 1)  # validates names before any work
    epochs = settings.budget.epochs_per_candidate(training_candidates(settings.candidates), epochs_per_candidate)
    configs = candidate_configs(settings.candidates, list(example_input.shape), accuracy, epochs, runtime=runtime)
    with tempfile.TemporaryDirectory(prefix="squeezer-search-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        caller = _Caller(model, init_loader, train_epoch_fn, validate_fn, configure_optimizers_fn, criterion)
        return _InProcessSearch(caller, example_input, settings, root).run(configs)


@dataclass(frozen=True)
class _Caller:
    """What the caller brings: the model, its data and its training functions."""

    model: nn.Module
    init_loader: Any
    train_epoch_fn: Callable[..., Any]
    validate_fn: Callable[[nn.Module, int], float]
    configure_optimizers_fn: Callable[[nn.Module], tuple[Any, Any]]
    criterion: Any


@dataclass
class _InProcessSearch:
    """One search's state as its candidates run one after another: what the halving rule has seen so
    far (epoch -> candidate -> margin / compression rate), the FP32 reference and the deadline."""

    caller: _Caller
    example_input: torch.Tensor
    settings: SearchSettings
    root: Path
    margins_at: dict[int, dict[str, float]] = field(default_factory=dict)
    rates_at: dict[int, dict[str, float | None]] = field(default_factory=dict)
    fp32_metric: float = 0.0
    deadline: float | None = None

    def run(self, configs: dict[str, dict[str, Any]]) -> SearchResult:
        started = time.monotonic()
        budget_s = self.settings.budget.max_wall_time_s
        self.deadline = started + budget_s if budget_s else None
        model = self.caller.model
        self.fp32_metric = float(self.caller.validate_fn(model.eval(), 0))
        export_onnx(copy.deepcopy(model).eval(), self.root / "fp32.onnx", (self.example_input,), verify=False)
        outcomes = [
            self._candidate(name, config)
            if not self._past_deadline()
            else CandidateOutcome(name=name, status="stopped", stopped_reason=DEADLINE_REASON)
            for name, config in configs.items()
        ]
        common_latency_scale(outcomes)
        front = pareto_front(outcomes, self.settings.objective)
        for outcome in outcomes:
            outcome.on_front = outcome.name in front
        advice = recommendation(outcomes, self.settings.objective, self.settings.runtime)
        return SearchResult(
            objective=self.settings.objective,
            runtime=self.settings.runtime,
            batch_size=self.settings.batch_size,
            fp32_metric=self.fp32_metric,
            metric_floor=self.settings.accuracy.floor(self.fp32_metric),
            candidates=outcomes,
            front=front,
            recommended=advice.name,
            keep_fp32=advice.keep_fp32,
            recommendation_note=advice.note,
            epochs_spent=sum(o.epochs for o in outcomes),
            wall_time_s=time.monotonic() - started,
        )

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _judge(self, name: str, record: EpochRecord) -> None:
        """The halving rule and the deadline after each epoch, as a service search's worker applies them."""
        self.margins_at.setdefault(record.epoch, {})[name] = record.accuracy_budget
        self.rates_at.setdefault(record.epoch, {})[name] = record.compression_rate
        margins, rates = self.margins_at[record.epoch], self.rates_at[record.epoch]
        previous = self.margins_at.get(record.epoch - 1, {}).get(name)
        reason = self.settings.stop_reason(name, record.epoch, margins, rates, previous, self._past_deadline())
        if reason is not None:
            raise _Stop(reason)

    def _candidate(self, name: str, config: dict[str, Any]) -> CandidateOutcome:
        caller, settings = self.caller, self.settings
        started = time.monotonic()
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        records: list[EpochRecord] = []

        def judge(record: EpochRecord) -> None:
            records.append(record)
            self._judge(name, record)

        nncf_config = NNCFConfig.from_dict({**config, "log_dir": str(workdir)})
        register_default_init_args(nncf_config, caller.init_loader, criterion=caller.criterion)
        loop: Any = None
        ptq_metric = 0.0
        try:
            if is_post_training(name):
                cmodel = self._post_training(name, config)
                ctrl = controller_of(cmodel)
                ptq_metric = float(caller.validate_fn(cmodel, 0))
            else:
                ctrl, cmodel = create_compressed_model(copy.deepcopy(caller.model), nncf_config)
                loop = create_accuracy_aware_training_loop(nncf_config, ctrl, self.fp32_metric, on_epoch_end=judge)
                cmodel = loop.run(
                    cmodel,
                    caller.train_epoch_fn,
                    caller.validate_fn,
                    configure_optimizers_fn=lambda: caller.configure_optimizers_fn(cmodel),
                )
        except _Stop as stop:
            logger.info("candidate %s stopped: %s", name, stop.reason)
            last = records[-1] if records else None
            return CandidateOutcome(
                name=name,
                status="stopped",
                metric=last.metric if last else None,
                within_budget=(last.accuracy_budget >= 0) if last else None,
                epochs=last.epoch if last else 0,
                wall_time_s=time.monotonic() - started,
                algorithms=compression_algorithms(config),
                stopped_reason=stop.reason,
            )
        except Exception as exc:  # one candidate that cannot run on this model does not end the search
            logger.warning("candidate %s failed: %s", name, exc, exc_info=True)
            return CandidateOutcome(
                name=name,
                status="failed",
                algorithms=compression_algorithms(config),
                error=f"{type(exc).__name__}: {exc}",
            )
        stats = loop.statistics if loop is not None else None
        metric = stats.compressed_accuracy if stats else records[-1].metric if records else ptq_metric
        onnx = ctrl.export_model(workdir / "model.onnx")
        inputs = {_input_name(onnx): self.example_input.numpy()}
        report, _ = measure(self.root / "fp32.onnx", onnx, inputs, runtimes=(settings.runtime,))
        timing = report.get(settings.runtime, {})
        return CandidateOutcome(
            name=name,
            status="succeeded",
            metric=metric,
            within_budget=metric >= settings.accuracy.floor(self.fp32_metric) - 1e-9,
            measured_latency_ms=timing.get("compressed_ms"),
            measured_fp32_latency_ms=timing.get("fp32_ms"),
            measured_speedup=timing.get("paired_speedup"),
            measured_speedup_spread=timing.get("paired_speedup_spread"),
            size_bytes=onnx.stat().st_size,
            compression_rate=stats.compression_rate if stats else None,
            algorithms=compression_algorithms(config),
            epochs=records[-1].epoch if records else 0,
            wall_time_s=time.monotonic() - started,
        )

    def _post_training(self, name: str, config: dict[str, Any]) -> nn.Module:
        """A post-training candidate: `quantize` on the init loader's inputs; accuracy control validates
        with the caller's `validate_fn` within the search's budget."""
        caller = self.caller
        loader = wrap_dataloader_for_init(caller.init_loader)
        calibration = Dataset(loader, lambda item: _call_form(loader.get_inputs(item)))
        runtime = config.get("target_runtime")
        advanced = AdvancedQuantizationParameters(target_runtime=runtime)
        if name == "ptq":
            return quantize(copy.deepcopy(caller.model), calibration, advanced_parameters=advanced)
        budget = self.settings.accuracy
        relative = budget.maximal_relative_accuracy_degradation
        absolute = float(budget.maximal_absolute_accuracy_degradation or 0.0)
        return quantize_with_accuracy_control(
            copy.deepcopy(caller.model),
            calibration,
            calibration,  # ranks the layer groups by output error; the metric itself is validate_fn's
            lambda model, _data: caller.validate_fn(model, 0),
            max_drop=relative / 100 if relative is not None else absolute,
            drop_type=DropType.RELATIVE if relative is not None else DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
        )


def _call_form(inputs: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    """(args, kwargs) as `Dataset` items are called: keyword arguments alone as a dict, else the args."""
    args, kwargs = inputs
    return kwargs if kwargs and not args else args


def _input_name(onnx: Path) -> str:
    import onnx as onnx_lib

    return str(onnx_lib.load(str(onnx), load_external_data=False).graph.input[0].name)
