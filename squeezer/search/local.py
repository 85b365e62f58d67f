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
from squeezer.compression.export.onnx_export import export_onnx
from squeezer.runtime.compare import measure
from squeezer.search.candidates import candidate_configs
from squeezer.search.front import common_latency_scale, pareto_front, recommend
from squeezer.search.halving import HalvingRule
from squeezer.search.result import CandidateOutcome, SearchResult
from squeezer.search.spec import (
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
    names = candidate_configs(settings.candidates, None, accuracy, 1)  # validates names before any work
    epochs = settings.budget.epochs_per_candidate(len(names), epochs_per_candidate)
    configs = candidate_configs(settings.candidates, list(example_input.shape), accuracy, epochs)
    with tempfile.TemporaryDirectory(prefix="squeezer-search-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run(
            model,
            init_loader,
            train_epoch_fn,
            validate_fn,
            configure_optimizers_fn,
            example_input,
            settings,
            configs,
            criterion,
            root,
        )


def _run(
    model: nn.Module,
    init_loader: Any,
    train_epoch_fn: Callable[..., Any],
    validate_fn: Callable[[nn.Module, int], float],
    configure_optimizers_fn: Callable[[nn.Module], tuple[Any, Any]],
    example_input: torch.Tensor,
    settings: SearchSettings,
    configs: dict[str, dict[str, Any]],
    criterion: Any,
    root: Path,
) -> SearchResult:
    started = time.monotonic()
    deadline = started + settings.budget.max_wall_time_s if settings.budget.max_wall_time_s else None
    fp32_metric = float(validate_fn(model.eval(), 0))
    fp32_onnx = root / "fp32.onnx"
    export_onnx(copy.deepcopy(model).eval(), fp32_onnx, (example_input,), verify=False)
    rule = HalvingRule(settings.halving_rate)
    margins_at: dict[int, dict[str, float]] = {}  # epoch -> candidate -> margin, as reported so far
    rates_at: dict[int, dict[str, float | None]] = {}  # epoch -> candidate -> compression rate
    outcomes: list[CandidateOutcome] = []
    for name, config in configs.items():
        if deadline is not None and time.monotonic() >= deadline:
            outcomes.append(
                CandidateOutcome(name=name, status="stopped", stopped_reason="the search's wall-time budget was spent")
            )
            continue
        outcomes.append(
            _candidate(
                name,
                config,
                model,
                init_loader,
                train_epoch_fn,
                validate_fn,
                configure_optimizers_fn,
                example_input,
                settings,
                fp32_metric,
                fp32_onnx,
                rule,
                margins_at,
                rates_at,
                deadline,
                criterion,
                root,
            )
        )
    common_latency_scale(outcomes)
    front = pareto_front(outcomes, settings.objective)
    for outcome in outcomes:
        outcome.on_front = outcome.name in front
    return SearchResult(
        objective=settings.objective,
        runtime=settings.runtime,
        batch_size=settings.batch_size,
        fp32_metric=fp32_metric,
        metric_floor=settings.accuracy.floor(fp32_metric),
        candidates=outcomes,
        front=front,
        recommended=recommend(outcomes, settings.objective),
        epochs_spent=sum(o.epochs for o in outcomes),
        wall_time_s=time.monotonic() - started,
    )


def _candidate(
    name: str,
    config: dict[str, Any],
    model: nn.Module,
    init_loader: Any,
    train_epoch_fn: Callable[..., Any],
    validate_fn: Callable[[nn.Module, int], float],
    configure_optimizers_fn: Callable[[nn.Module], tuple[Any, Any]],
    example_input: torch.Tensor,
    settings: SearchSettings,
    fp32_metric: float,
    fp32_onnx: Path,
    rule: HalvingRule,
    margins_at: dict[int, dict[str, float]],
    rates_at: dict[int, dict[str, float | None]],
    deadline: float | None,
    criterion: Any,
    root: Path,
) -> CandidateOutcome:
    started = time.monotonic()
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    records: list[EpochRecord] = []

    def judge(record: EpochRecord) -> None:
        records.append(record)
        margins = margins_at.setdefault(record.epoch, {})
        margins[name] = record.accuracy_budget
        rates = rates_at.setdefault(record.epoch, {})
        rates[name] = record.compression_rate
        if record.epoch > 0 and deadline is not None and time.monotonic() >= deadline:
            raise _Stop("the search's wall-time budget was spent")
        if settings.early_stopping and rule.should_stop(name, record.epoch, margins, rates):
            raise _Stop(f"successive halving at epoch {record.epoch}: {record.accuracy_budget:+.3g} from the budget")

    nncf_config = NNCFConfig.from_dict({**config, "log_dir": str(workdir)})
    register_default_init_args(nncf_config, init_loader, criterion=criterion)
    try:
        ctrl, cmodel = create_compressed_model(copy.deepcopy(model), nncf_config)
        loop = create_accuracy_aware_training_loop(nncf_config, ctrl, fp32_metric, on_epoch_end=judge)
        cmodel = loop.run(
            cmodel, train_epoch_fn, validate_fn, configure_optimizers_fn=lambda: configure_optimizers_fn(cmodel)
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
            stopped_reason=stop.reason,
        )
    except Exception as exc:  # one candidate that cannot run on this model does not end the search
        logger.warning("candidate %s failed: %s", name, exc, exc_info=True)
        return CandidateOutcome(name=name, status="failed", error=f"{type(exc).__name__}: {exc}")
    stats = loop.statistics
    metric = stats.compressed_accuracy if stats else records[-1].metric
    onnx = ctrl.export_model(workdir / "model.onnx")
    report, _ = measure(fp32_onnx, onnx, {_input_name(onnx): example_input.numpy()}, runtimes=(settings.runtime,))
    timing = report.get(settings.runtime, {})
    return CandidateOutcome(
        name=name,
        status="succeeded",
        metric=metric,
        within_budget=metric >= settings.accuracy.floor(fp32_metric) - 1e-9,
        measured_latency_ms=timing.get("compressed_ms"),
        measured_fp32_latency_ms=timing.get("fp32_ms"),
        measured_speedup=timing.get("paired_speedup"),
        size_bytes=onnx.stat().st_size,
        compression_rate=stats.compression_rate if stats else None,
        epochs=records[-1].epoch if records else 0,
        wall_time_s=time.monotonic() - started,
    )


def _input_name(onnx: Path) -> str:
    import onnx as onnx_lib

    return str(onnx_lib.load(str(onnx), load_external_data=False).graph.input[0].name)
