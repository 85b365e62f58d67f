"""Public entry points: `create_compressed_model` and `load_state` (NNCF-compatible)."""

from __future__ import annotations

import copy
import inspect
import logging
import re
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from squeezer.compression import registry
from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import InputInfo
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import top_level_problems
from squeezer.compression.controller import CompositeController, CompressionController, CompressionStage
from squeezer.compression.graph.dot import write_dot
from squeezer.compression.graph.lift import export_and_lift
from squeezer.compression.graph.surgery import evaluating
from squeezer.compression.graph.trace import name_nodes, trace
from squeezer.compression.init_args import QuantizationRangeInitArgs, first_batch, to_device
from squeezer.compression.quantization.placement_policy import placement_policy
from squeezer.errors import CompressionError, ConfigError, StateError

logger = logging.getLogger(__name__)

_CONTROLLERS: weakref.WeakKeyDictionary[nn.Module, CompressionController] = weakref.WeakKeyDictionary()


def _example_inputs(
    config: NNCFConfig, device: torch.device, example_input: Any = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Dummy inputs from `input_info`, else `example_input` (a tensor, a tuple of them or a dict of keyword
    inputs), else the first batch of the registered init loader."""
    infos: list[InputInfo] | None = config.model.input_info
    if not infos and example_input is not None:
        if isinstance(example_input, dict):
            return (), to_device(dict(example_input), device)
        given = tuple(example_input) if isinstance(example_input, tuple | list) else (example_input,)
        return to_device(given, device), {}
    if infos:
        args: list[torch.Tensor] = []
        kwargs: dict[str, torch.Tensor] = {}
        for info in infos:
            dtype = torch.long if info.type == "long" else torch.float32
            shape = tuple(info.sample_size)
            if info.filler == "zeros":
                t = torch.zeros(shape, dtype=dtype)
            elif info.filler == "random":
                t = torch.rand(shape).to(dtype)
            else:
                t = torch.ones(shape, dtype=dtype)
            t = t.to(device)
            if info.keyword:
                kwargs[info.keyword] = t
            else:
                args.append(t)
        return tuple(args), kwargs
    if config.has_extra_struct(QuantizationRangeInitArgs):
        return first_batch(config.get_extra_struct(QuantizationRangeInitArgs).data_loader, device)
    raise ConfigError(
        "input_info is missing and no data loader is registered to deduce the model inputs; add "
        '"input_info": {"sample_size": [1, C, H, W]}, pass example_input=, or call register_default_init_args first',
        path="$.input_info",
    )


def _verification_inputs(
    config: NNCFConfig, example: tuple[tuple[Any, ...], dict[str, Any]], device: torch.device
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Real data when a loader is registered (export checks are meaningless on all-ones inputs)."""
    if config.has_extra_struct(QuantizationRangeInitArgs):
        return first_batch(config.get_extra_struct(QuantizationRangeInitArgs).data_loader, device)
    args, kwargs = example
    gen = torch.Generator().manual_seed(0)

    def randomize(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            shape = (max(2, t.shape[0]), *t.shape[1:]) if t.dim() else t.shape
            return torch.randn(shape, generator=gen).to(t.device)
        return t

    return tuple(randomize(a) for a in args), {k: randomize(v) for k, v in kwargs.items()}


def _unused_options(model: nn.Module, example: tuple[tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    """forward's parameters that input_info does not feed and whose default is not a tensor (timm's
    `attn_mask=None, is_causal=False`): traced as their defaults, not as graph inputs, since the ONNX
    exporter would otherwise feed each one as a tensor input (`is_causal must be bool, not Tensor`)."""
    args, kwargs = example
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {
        p.name: p.default
        for i, p in enumerate(parameters)
        if p.kind in (*positional, inspect.Parameter.KEYWORD_ONLY)
        and p.default is not inspect.Parameter.empty
        and not isinstance(p.default, torch.Tensor)
        and p.name not in kwargs
        and not (p.kind in positional and i < len(args))
    }


def _trace(
    model: nn.Module, example: tuple[tuple[Any, ...], dict[str, Any]]
) -> tuple[fx.GraphModule | None, str | None]:
    if isinstance(model, fx.GraphModule):
        gm = model  # already a graph (e.g. lifted from torch.export): keep its nodes and their module stacks
    else:
        try:
            gm = trace(model, _unused_options(model, example))
        except Exception as fx_exc:  # fx cannot follow data-dependent Python: capture with torch.export
            fx_error = f"{type(fx_exc).__name__}: {fx_exc}".splitlines()[0]
            try:
                gm = export_and_lift(model, *example)
            except Exception as exc:  # neither works: the weights-only fallback
                return None, f"{fx_error}; torch.export: {type(exc).__name__}: {exc}".splitlines()[0]
            logger.info(
                "torch.fx could not trace %s (%s); captured it with torch.export", type(model).__name__, fx_error
            )
    args, kwargs = example
    placeholders = [str(n.target) for n in gm.graph.nodes if n.op == "placeholder"]
    ordered = list(args) + [kwargs[n] for n in placeholders[len(args) :] if n in kwargs]
    try:
        with evaluating(gm), torch.no_grad():
            ShapeProp(gm).propagate(*ordered)
    except Exception as exc:
        raise CompressionError(
            f"the model does not run on the inputs described by input_info: {type(exc).__name__}: {exc}"
        ) from exc
    return gm, None


def create_compressed_model(
    model: nn.Module,
    config: NNCFConfig | dict[str, Any],
    compression_state: dict[str, Any] | None = None,
    dump_graphs: bool = True,
    *,
    example_input: Any = None,
    **unsupported: Any,
) -> tuple[CompressionController, nn.Module]:
    """Compress a copy of `model` as `config` says; returns `(controller, compressed_model)`.

    `example_input` (Squeezer's addition, as NNCF 3.x's `quantize` takes one): the model's inputs when the
    config has no `input_info`, so one config fits models of any input shape.

    The compressed model is a `torch.fx.GraphModule` holding the original submodules (state-dict
    names are unchanged apart from parametrized weights); the caller's model is left untouched.
    """
    for key in ("dummy_forward_fn", "wrap_inputs_fn", "wrap_outputs_fn"):
        if unsupported.get(key) is not None:
            raise CompressionError(f"{key} is not supported; describe inputs with input_info or an InitDataLoader")
    if unsupported.keys() - {"dummy_forward_fn", "wrap_inputs_fn", "wrap_outputs_fn"}:
        raise TypeError(f"unexpected arguments: {sorted(unsupported)}")
    if model in _CONTROLLERS:
        raise CompressionError("the model object has already been compressed; pass the original model")
    if not isinstance(config, NNCFConfig):
        config = NNCFConfig.from_dict(config)
    for path, problem in top_level_problems(config):  # NNCF accepts these silently; the service refuses them
        logger.warning("config %s: %s", path, problem)
    cfg = config.model
    if compression_state is not None and "builder_state" not in compression_state:
        raise StateError("compression_state must be the dict returned by ctrl.get_compression_state()")
    work = copy.deepcopy(model)
    device = next((p.device for p in work.parameters()), torch.device("cpu"))
    example = _example_inputs(config, device, example_input)
    gm, trace_error = _trace(work, example)
    placement = placement_policy(cfg)
    if gm is not None:
        placement.prepare_graph(gm)  # before naming: quantizer ids name the written-out nodes
    traced = name_nodes(gm, type(model).__name__) if gm is not None else None
    compressed: nn.Module = gm if gm is not None else work
    log_dir = Path(cfg.log_dir)
    if dump_graphs and traced is not None:
        write_dot(traced.gm, traced.names, log_dir / "original_graph.dot")

    algorithms = sorted(cfg.compression, key=lambda a: registry.priority(a.algorithm))
    children: dict[str, CompressionController] = {}
    for algo in algorithms:
        builder = registry.algorithm(type(algo)).load()  # imports the implementation on first use
        state = None
        if compression_state is not None:
            state = compression_state["builder_state"].get(algo.algorithm)
            if state is None:
                raise StateError(f"compression_state has no builder state for {algo.algorithm!r}")
        ctx = BuildContext(
            traced, compressed, config, example, placement, builder_state=state, trace_error=trace_error, original=model
        )
        children[algo.algorithm] = builder(ctx, algo)
    ordered = [children[a.algorithm] for a in cfg.compression]
    if not ordered:
        ctrl: CompressionController = _NoCompressionController(
            compressed, BuildContext(traced, compressed, config, example, placement, trace_error=trace_error)
        )
    elif len(ordered) == 1:
        ctrl = ordered[0]
    else:
        ctrl = CompositeController(compressed, ordered)
        ctrl.context = ordered[0].context
    if ctrl.context is not None:
        ctrl.context.verify_inputs = _verification_inputs(config, example, device)
    if compression_state is not None:
        ctrl.load_state(compression_state.get("ctrl_state", {}))
    if dump_graphs and gm is not None:
        write_dot(gm, name_nodes(gm, type(model).__name__).names, log_dir / "compressed_graph.dot")
    _CONTROLLERS[compressed] = ctrl
    return ctrl, compressed


class _NoCompressionController(CompressionController):
    name = "none"

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.UNCOMPRESSED


def controller_of(model: nn.Module) -> CompressionController:
    try:
        return _CONTROLLERS[model]
    except KeyError:
        raise CompressionError("this model was not returned by create_compressed_model") from None


def strip(model: nn.Module, do_copy: bool = True) -> nn.Module:
    """`nncf.strip`: delegate to the model's controller."""
    ctrl = controller_of(model)
    target = copy.deepcopy(model) if do_copy else model
    return ctrl.strip_model(target)


# ------------------------------------------------------------------------------------------------ load_state

_OPTIONAL_SUFFIXES = ("enabled", "_num_bits")


def _normalize(key: str) -> str:
    key = re.sub(r"^(module\.)+", "", key)
    return re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1", key)


def load_state(
    model: nn.Module,
    state_dict_to_load: dict[str, Any],
    is_resume: bool = False,
    keys_to_ignore: list[str] | None = None,
) -> int:
    """Tolerant state-dict loading; returns the number of entries loaded.

    Keys are matched after stripping `module.` prefixes and parametrization wrappers, so an
    uncompressed checkpoint loads into a compressed model and vice versa. With `is_resume=True`
    any missing, unexpected or size-mismatched key is an error; otherwise they are logged.
    """
    ignore = set(keys_to_ignore or [])
    own = model.state_dict()
    own_by_norm = {_normalize(k): k for k in own}
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    mismatched_targets: set[str] = set()
    for key, value in state_dict_to_load.items():
        norm = _normalize(key)
        if norm in ignore or key in ignore:
            continue
        target = own_by_norm.get(norm)
        if target is None:
            unexpected.append(key)
        elif own[target].shape != value.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[target].shape)}")
            mismatched_targets.add(target)
        else:
            matched[target] = value
    missing = [
        k
        for k in own
        if k not in matched
        and k not in mismatched_targets
        and _normalize(k) not in ignore
        and not k.endswith(_OPTIONAL_SUFFIXES)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if mismatched:
        problems.append(f"size mismatch: {mismatched}")
    if problems:
        message = "Error(s) when loading model parameters: " + "; ".join(problems)
        if is_resume:
            raise StateError(message)
        logger.warning(message)
    model.load_state_dict(matched, strict=False)
    return len(matched)
