"""Channel groups: layers whose output channels must be pruned together.

torch-pruning's dependency graph finds them (residual adds, concatenations, BatchNorm, depthwise
convolutions); here they are filtered by NNCF's pruning rules (first conv, downsampling convs, layers
feeding a model output, scopes) and reduced to what masks and removal need.

Models this project did not write bring what neither torch-pruning nor channel removal can follow:
channel shuffles, grouped convolutions, LayerNorm/Embedding/attention modules on the channels, tied
weights. A group touching one is left whole and reported (`SkippedLayers`), never a crash; the
analysis itself is time-bounded. `check.py` then tries every remaining group on a copy. What a group is
lives in `channel_group.py`.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import fx, nn
from torch_pruning import ops
from torch_pruning.dependency import index_mapping, shape_infer

from squeezer.compression.build import BuildContext
from squeezer.compression.graph.trace import first_layers
from squeezer.compression.pruning.channel_group import (  # noqa: F401  (also their import path before the move)
    NORMS,
    PRUNABLE,
    TRANSPOSED,
    ChannelGroup,
    Member,
    SkippedLayers,
    depthwise,
    grouped,
    in_axis,
    is_conv1d,
    out_axis,
)

# torch-pruning's dependency analysis is unbounded on some models (Swin-T: over 600 s); after this
# many seconds the layers not analysed yet are left whole.
ANALYSIS_TIME_LIMIT_S = 120.0


class AnalysisTimeout(BaseException):
    """torch-pruning ran past ANALYSIS_TIME_LIMIT_S. A BaseException, like KeyboardInterrupt, so that the
    `except Exception` around torch-pruning's index mappings (which marks a mapping it cannot follow)
    does not take the timeout for a mapping failure and carry on without a timer."""


@contextlib.contextmanager
def _until(deadline: float) -> Iterator[None]:
    """Interrupt the block at `deadline` (time.monotonic()) with AnalysisTimeout: a SIGALRM timer in
    the main thread, nested inside one already running (pytest-timeout's, say), which is re-armed
    afterwards; in other threads only the checks between groups bound the time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AnalysisTimeout
    outer = signal.getitimer(signal.ITIMER_REAL)[0] if hasattr(signal, "setitimer") else 0.0
    if (
        threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "setitimer")
        or (0 < outer <= remaining)
    ):
        yield  # no timer here, or the outer one fires first anyway
        return

    def on_alarm(signum: int, frame: Any) -> None:
        while frame is not None:  # raised in a finalizer it would only be printed: wait for the next tick
            if frame.f_code.co_name == "__del__":
                return
            frame = frame.f_back
        raise AnalysisTimeout

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    # no collection while the timer runs: an exception raised in a gc callback is only printed
    collecting = gc.isenabled()
    gc.disable()
    # and again every half second, in case the first one lands in code that swallows every exception
    signal.setitimer(signal.ITIMER_REAL, remaining, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if collecting:
            gc.enable()
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


class _Graph(tp.DependencyGraph):
    """torch-pruning's graph, tolerant of the concat/split/reshape nodes whose index mapping it cannot
    compute (ZeroDivisionError in a channel shuffle's reshape, a concat of inputs of unknown size):
    such a node is made opaque, the rest of the model is analysed, and every group through it is
    refused."""

    def _build_dependency(self, module2node: dict[Any, Any]) -> None:
        super()._build_dependency(module2node)
        shape_infer.init_shape_information(self)
        self.opaque: set[Any] = set()
        updates = {
            ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
            ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
            ops.OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
            ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
            ops.OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
            ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
        }
        for node in module2node.values():
            update = updates.get(node.type)
            if update is None:
                continue
            try:
                update(self, node)
            except Exception:  # torch-pruning cannot map channels through this node
                self.opaque.add(node)
                node.type = ops.OPTYPE.ELEMENTWISE  # skipped by every later index-mapping update


def _too_slow() -> str:
    return f"torch-pruning's dependency analysis took longer than {ANALYSIS_TIME_LIMIT_S:g} s"


def _fx_nodes(ctx: BuildContext) -> dict[str, fx.Node]:
    if ctx.traced is None:
        return {}
    return {str(n.target): n for n in ctx.traced.gm.graph.nodes if n.op == "call_module"}


def _reaches_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True if the node's output reaches a model output without passing another prunable layer."""
    stack, seen = list(node.users), set()
    while stack:
        user = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.op == "output":
            return True
        if user.op == "call_module" and isinstance(modules.get(str(user.target)), PRUNABLE):
            continue
        stack.extend(user.users)
    return False


def _graph_output_layers(graph: tp.DependencyGraph) -> set[nn.Module]:
    """Layers whose outputs reach a model output without passing another prunable layer, read from
    torch-pruning's graph (the only graph there is when the model cannot be traced with torch.fx)."""
    result: set[nn.Module] = set()
    for module, start in graph.module2node.items():
        if not isinstance(module, PRUNABLE):
            continue
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if not node.outputs:
                result.add(module)
                break
            stack += [n for n in node.outputs if not isinstance(n.module, PRUNABLE)]
    return result


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output that autograd can walk back (tuples, dicts, ModelOutput, caches)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.grad_fn is not None else []
    if isinstance(out, dict):
        out = list(out.values())
    elif not isinstance(out, list | tuple):
        out = list(vars(out).values()) if hasattr(out, "__dict__") else []
    return [t for item in out for t in _flat_tensors(item)]


def _shared_weights(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> the other modules holding the same weight tensor (tied embeddings / LM heads)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for t in module._parameters.values():
            if t is not None:
                owners.setdefault(id(t), []).append(name)
    return {n: [o for o in names if o != n] for names in owners.values() if len(names) > 1 for n in names}


def _channels(module: nn.Module, out: bool) -> int:
    """How many output (or input) channels a layer has, the range torch-pruning's indices must fall in."""
    if isinstance(module, NORMS):
        return int(module.num_features)
    w = cast(torch.Tensor, module.weight)
    if not out and isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return int(module.in_channels)
    return int(w.shape[out_axis(module) if out else in_axis(module)])


UNSUPPORTED = "these channels reach {}, whose channels cannot be removed"
TIED = "tied weights: {}"
GROUPED = "grouped convolutions would lose channels unevenly across their groups: {}"
OUT_OF_RANGE = "torch-pruning mapped these channels beyond the channels of {} (a reshape such as a channel shuffle)"
PARAMETER = "these channels reach {}, parameters outside a layer Squeezer can cut"
OPAQUE = "torch-pruning cannot map these channels through {} (a reshape such as a channel shuffle, or a concat)"


def _problem(
    module: nn.Module, name: str, member: Member, as_output: bool, shared: dict[str, list[str]]
) -> tuple[str, str] | None:
    """Why a group touching `module` this way cannot be pruned safely, as (message template, the
    layer's part of it); None: it can."""
    if not isinstance(module, PRUNABLE + NORMS):
        return UNSUPPORTED, f"{name} ({type(module).__name__})"
    if name in shared:
        return TIED, f"{name} shares its weight with {', '.join(shared[name])}"
    if grouped(module):
        return GROUPED, f"{name} (groups={module.groups})"
    size = _channels(module, as_output or isinstance(module, NORMS))
    if member.idxs and (max(member.idxs) >= size or min(member.idxs) < 0):
        return OUT_OF_RANGE, f"{name} ({size})"
    return None


def _reason(problems: list[tuple[str, str]]) -> str:
    """One sentence per kind of problem, naming every layer it concerns."""
    by_kind: dict[str, list[str]] = {}
    for template, part in problems:
        by_kind.setdefault(template, [])
        if part not in by_kind[template]:
            by_kind[template].append(part)
    return "; ".join(template.format(", ".join(parts)) for template, parts in by_kind.items())


def find_groups(
    ctx: BuildContext, allowed: set[str], prune_first: bool, prune_downsample: bool
) -> tuple[list[ChannelGroup], list[SkippedLayers]]:
    """Groups whose every producer is allowed (scope, first conv, stride, grouping, not an output layer)
    and whose every member torch-pruning and channel removal can handle; the others are returned as
    skipped, with the reason."""
    model = copy.deepcopy(ctx.original if ctx.original is not None else ctx.model).eval()
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    nodes = _fx_nodes(ctx)
    fx_modules = ctx.traced.modules if ctx.traced is not None else {}
    first = first_layers(ctx.traced.gm, PRUNABLE) if ctx.traced is not None else set()
    shared = _shared_weights(model)

    def rule(name: str) -> str | None:
        """Why the config's rules keep this producer (None: they do not)."""
        m = modules[name]
        if name not in allowed:
            return "outside the scopes of filter_pruning"
        if name in first and not prune_first:
            return "the first convolution (prune_first_conv is false)"
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and any(s != 1 for s in m.stride) and not prune_downsample:
            return "a downsampling convolution (prune_downsample_convs is false)"
        return None

    args, kwargs = ctx.example_inputs
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    everything = [n for n, m in modules.items() if isinstance(m, PRUNABLE)]
    deadline = time.monotonic() + ANALYSIS_TIME_LIMIT_S
    try:
        with _until(deadline):
            graph = _Graph().build_dependency(
                model,
                example_inputs=args,
                forward_fn=lambda m, _: _flat_tensors(m(*args, **kwargs)),
                verbose=False,
            )
    except AnalysisTimeout:
        return [], [SkippedLayers(everything, _too_slow())]
    except Exception as exc:  # torch-pruning cannot follow the model: nothing is pruned, and the user is told
        reason = f"torch-pruning could not analyse the model: {type(exc).__name__}: {exc}".splitlines()[0]
        return [], [SkippedLayers(everything, reason)]
    output_layers = _graph_output_layers(graph) | {
        modules[n] for n in nodes if isinstance(modules.get(n), PRUNABLE) and _reaches_output(nodes[n], fx_modules)
    }
    groups: list[ChannelGroup] = []
    skipped: list[SkippedLayers] = []
    conv1d = [n for n, m in modules.items() if is_conv1d(m)]
    if conv1d:
        skipped.append(
            SkippedLayers(conv1d, "Hugging Face Conv1D layers (GPT-2) are not pruned: their weight is (in, out)")
        )
    visited: set[nn.Module] = set()
    roots = [m for m in graph.module2node if isinstance(m, PRUNABLE) and m in names]
    for i, root in enumerate(roots):
        if root in visited:
            continue
        try:
            with _until(deadline):
                group, problem = _group_of(graph, root, names, output_layers, shared, rule, len(groups))
        except AnalysisTimeout:
            skipped.append(SkippedLayers([names[m] for m in roots[i:] if m not in visited], _too_slow()))
            break
        visited |= {modules[m.name] for m in (group.producers if group else [])}
        visited.add(root)
        if problem is not None:
            skipped.append(problem)
        elif group is not None and group.producers:
            groups.append(group)
    return groups, skipped


def _group_of(
    graph: _Graph,
    root: nn.Module,
    names: dict[nn.Module, str],
    output_layers: set[nn.Module],
    shared: dict[str, list[str]],
    rule: Callable[[str], str | None],
    gid: int,
) -> tuple[ChannelGroup | None, SkippedLayers | None]:
    """The channel group rooted at `root`'s outputs, or why its layers are left whole."""
    try:
        pruner = graph.get_pruner_of_module(root)
        tp_group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(pruner.get_out_channels(root))))
    except AnalysisTimeout:
        raise
    except Exception as exc:  # e.g. ZeroDivisionError in its reshape index mapping (channel shuffle)
        reason = f"torch-pruning failed on this group: {type(exc).__name__}: {exc}".splitlines()[0]
        return None, SkippedLayers([names[root]], reason)
    group = ChannelGroup(gid, len(tp_group[0].idxs))
    problems: list[tuple[str, str]] = []
    rules: list[str] = []
    for item in tp_group:
        if item.dep.target in graph.opaque:
            problems.append((OPAQUE, str(item.dep.target.grad_fn.name() if item.dep.target.grad_fn else "an op")))
        target = item.dep.target.module
        if isinstance(target, nn.Parameter):
            param = graph._param_to_name.get(target, "a parameter")
            problems.append((PARAMETER, param))
            continue
        if target not in names:
            continue  # torch-pruning's stand-ins for elementwise ops, concatenations and reshapes
        name = names[target]
        member = Member(name, [int(i) for i in item.idxs], [int(r) for r in item.root_idxs])
        as_output = isinstance(target, PRUNABLE) and item.dep.handler.__name__ == "prune_out_channels"
        problem = _problem(target, name, member, as_output, shared)
        if problem is None and as_output and not depthwise(target):
            # a depthwise conv is pruned through its producers; its own filters follow
            if target in output_layers:
                rules.append(f"{name} computes a model output (its channels are what the model returns)")
            elif (by_rule := rule(name)) is not None:
                rules.append(f"{name} is {by_rule}")
        if problem is not None:
            problems.append(problem)
        if as_output:
            group.producers.append(member)
        elif isinstance(target, NORMS):
            group.norms.append(member)
        else:
            group.consumers.append(member)
    layers = sorted(set(group.producer_names)) or [names[root]]
    if problems:
        return group, SkippedLayers(layers, _reason(problems))
    if rules:
        return group, SkippedLayers(layers, "; ".join(dict.fromkeys(rules)), by_rule=True)
    return group, None


def example_device(ctx: BuildContext) -> torch.device:
    return ctx.device()
