"""SmoothQuant: move activation outliers into the weights of the Linear layers that read them.

A transformer's Linear inputs have a few channels a hundred times larger than the rest, so a per-tensor
INT8 grid spends its levels on them. With s_c = max|x_c|^alpha / max|W_:,c|^(1-alpha), the input is
divided by s (an explicit multiply before the quantizer, `SmoothScale`) and the weight columns are
multiplied by it: the FP32 function is unchanged, the activation grid is finer, and the per-channel
weight grid absorbs the larger columns. alpha is chosen per layer group (the Linears that read one
quantized tensor) by that group's own output error on calibration rows: no single alpha suits every
layer (MiniLM's feed-forward output wants less migration than its attention inputs). The same output
error picks how far to clip each group's input range: a GELU output's rare tokens ten times the rest
cost the Linear after it more as a coarse grid than as clipped values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import torch
from torch import fx, nn

from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.ptq.dataset import Inputs
from squeezer.compression.ptq.ranges import quantizers_enabled
from squeezer.compression.ptq.tokens import real_rows, token_mask
from squeezer.compression.quantization.placement import ACTIVATIONS_ATTR
from squeezer.compression.quantization.quantizer import FakeQuantizer, QuantizerSpec

logger = logging.getLogger(__name__)

SMOOTH_ATTR = "_smooth_quant"
ROWS = 4096  # calibration rows kept per group for the alpha search


class SmoothScale(nn.Module):
    """x * inverse_scale over the last dimension (exported as one Mul before the QuantizeLinear)."""

    inverse_scale: torch.Tensor

    def __init__(self, inverse_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inverse_scale", inverse_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.inverse_scale


@dataclass
class _Group:
    point_id: str
    qnode: fx.Node
    linears: list[nn.Linear]
    paths: list[str]
    quantizer: FakeQuantizer
    mins: torch.Tensor | None = None  # per channel, over all calibration data
    maxs: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    # of the FP32 weights, computed once for the whole search (the weights are rescaled only after it)
    weight_absmax: torch.Tensor | None = None
    references: list[torch.Tensor] | None = None  # rows @ W^T per Linear

    @property
    def absmax(self) -> torch.Tensor | None:
        return None if self.mins is None or self.maxs is None else torch.maximum(self.mins.abs(), self.maxs.abs())


def _groups(gm: fx.GraphModule, act_q: dict[str, FakeQuantizer], quantized_modules: set[str]) -> list[_Group]:
    """Activation quantizers inserted once whose every reader is a quantized nn.Linear."""
    nodes: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target).startswith(ACTIVATIONS_ATTR + "."):
            nodes.setdefault(str(node.target)[len(ACTIVATIONS_ATTR) + 1 :], []).append(node)
    modules = dict(gm.named_modules())
    groups = []
    for point_id, qnodes in nodes.items():
        if len(qnodes) != 1 or point_id not in act_q or act_q[point_id].spec.per_channel:
            continue
        users = list(qnodes[0].users)
        if not users or not all(
            u.op == "call_module"
            and isinstance(modules[str(u.target)], nn.Linear)
            and str(u.target) in quantized_modules
            for u in users
        ):
            continue
        linears = [cast(nn.Linear, modules[str(u.target)]) for u in users]
        if len({m.in_features for m in linears}) != 1:
            continue
        groups.append(_Group(point_id, qnodes[0], linears, [str(u.target) for u in users], act_q[point_id]))
    return groups


def _collect(
    model: nn.Module, groups: list[_Group], batches: list[Inputs], quantizers: list[FakeQuantizer], tokens: bool
) -> None:
    """Per-channel |max| of each group's input and a random subsample of its rows (FP32 model); `tokens`:
    of the real tokens' rows only (`tokens.py`)."""
    generator = torch.Generator().manual_seed(0)

    def hook(group: _Group):
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            rows = real_rows(x)
            low, high = rows.amin(0), rows.amax(0)
            group.mins = low if group.mins is None else torch.minimum(group.mins, low)
            group.maxs = high if group.maxs is None else torch.maximum(group.maxs, high)
            pick = rows[torch.randperm(rows.shape[0], generator=generator)[: ROWS // len(batches) + 1]]
            group.rows = pick if group.rows is None else torch.cat([group.rows, pick])

        return record

    handles = [g.quantizer.register_forward_pre_hook(hook(g)) for g in groups]
    try:
        with quantizers_enabled(quantizers, False), torch.no_grad():
            for args, kwargs in batches:
                with token_mask(kwargs, tokens):
                    model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row 8-bit narrow grid, as the weight quantizers use."""
    step = w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
    return (w / step).round().clamp(-127, 127) * step


def _fake_quant_input(x: torch.Tensor, spec: QuantizerSpec, lo: float, hi: float) -> torch.Tensor:
    """Per-tensor 8-bit grid over [lo, hi] (symmetric or asymmetric as the quantizer is)."""
    if spec.mode == "symmetric":
        signed = lo < 0
        step = max(abs(lo), abs(hi), 1e-8) / (127 if signed else 255)
        return (x / step).round().clamp(-128 if signed else 0, 127 if signed else 255) * step
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    step = max(hi - lo, 1e-8) / 255
    zero = round(-lo / step)
    return ((x / step).round() + zero).clamp(0, 255).sub(zero) * step


def _scales(group: _Group, alpha: float) -> torch.Tensor:
    assert group.absmax is not None
    if group.weight_absmax is None:
        group.weight_absmax = torch.stack([original_weight(m).detach().abs().amax(0) for m in group.linears]).amax(0)
    w_absmax = group.weight_absmax
    s = group.absmax.clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def _group_error(group: _Group, alpha: float, ratio: float = 1.0) -> float:
    """Relative squared output error of the group's Linears with INT8 input and weights, at this alpha
    and with the input's range (over all calibration data, after smoothing) shrunk by `ratio`."""
    assert group.rows is not None and group.mins is not None and group.maxs is not None
    x = group.rows
    s = _scales(group, alpha) if alpha > 0 else torch.ones(x.shape[1])
    lo, hi = float((group.mins / s).min()) * ratio, float((group.maxs / s).max()) * ratio
    xq = _fake_quant_input(x / s, group.quantizer.spec, lo, hi)
    if group.references is None:
        group.references = [x @ original_weight(m).detach().float().T for m in group.linears]
    err = 0.0
    for m, ref in zip(group.linears, group.references, strict=True):
        w = original_weight(m).detach().float()
        err += float((xq @ _fake_quant_weight(w * s).T - ref).pow(2).mean() / ref.pow(2).mean().clamp(min=1e-12))
    return err


def _choose(group: _Group, alphas: tuple[float, ...], ratios: tuple[float, ...]) -> tuple[float, float]:
    """(alpha, clip ratio) with the smallest output error: alpha first at the full range, then the ratio."""
    alpha = min(alphas, key=lambda a: _group_error(group, a)) if len(alphas) > 1 else alphas[0]
    ratio = min(ratios, key=lambda r: _group_error(group, alpha, r)) if len(ratios) > 1 else ratios[0]
    return alpha, ratio


def smooth_quant(
    gm: fx.GraphModule,
    act_q: dict[str, FakeQuantizer],
    quantized_modules: set[str],
    batches: list[Inputs],
    all_quantizers: list[FakeQuantizer],
    alphas: tuple[float, ...],
    ratios: tuple[float, ...] = (1.0,),
    second_moments: dict[str, torch.Tensor] | None = None,
    tokens: bool = False,
) -> dict[str, tuple[float, float]]:
    """Insert `SmoothScale` before every eligible group and rescale its weights; returns (alpha, clip ratio)
    per group: the ratio by which its input quantizer's min-max range is to be shrunk. `second_moments`,
    when given, receives each group Linear's (smoothed) input X^T X, for `gptq.py`."""
    groups = _groups(gm, act_q, quantized_modules)
    if not groups:
        return {}
    _collect(gm, groups, batches, all_quantizers, tokens)
    chosen: dict[str, tuple[float, float]] = {}
    inverse_scales: dict[str, torch.Tensor] = {}
    for group in groups:
        if group.absmax is None:
            continue
        alpha, ratio = _choose(group, alphas, ratios)
        chosen[group.point_id] = (alpha, ratio)
        if second_moments is not None and group.rows is not None:
            x = group.rows / (_scales(group, alpha) if alpha > 0 else 1.0)
            h = x.double().T @ x.double()
            second_moments.update(dict.fromkeys(group.paths, h))
        if alpha <= 0:
            continue
        s = _scales(group, alpha)
        with torch.no_grad():
            for m in group.linears:
                original_weight(m).mul_(s.to(original_weight(m).dtype))
        inverse_scales[group.point_id] = 1.0 / s
    _insert(gm, {g.point_id: g.qnode for g in groups}, inverse_scales)
    logger.info("SmoothQuant: %d of %d groups smoothed", len(inverse_scales), len(groups))
    return chosen


def _insert(gm: fx.GraphModule, qnodes: dict[str, fx.Node], inverse_scales: dict[str, torch.Tensor]) -> None:
    """A `SmoothScale` before each named quantizer node, as `_smooth_quant.<n>` in the order given."""
    if not inverse_scales:
        return
    container = nn.ModuleDict()
    gm.add_submodule(SMOOTH_ATTR, container)
    for index, (point_id, inverse) in enumerate(inverse_scales.items()):
        container[str(index)] = SmoothScale(inverse)
        qnode = qnodes[point_id]
        with gm.graph.inserting_before(qnode):
            scaled = gm.graph.call_module(f"{SMOOTH_ATTR}.{index}", (qnode.args[0],))
        qnode.args = (scaled, *qnode.args[1:])
    gm.graph.lint()
    gm.recompile()


def smoothed_groups(gm: fx.GraphModule) -> dict[str, int]:
    """point id -> channels of each `SmoothScale` in `gm`, in module order (what `restore_smoothing` takes)."""
    if not hasattr(gm, SMOOTH_ATTR):
        return {}
    out: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target).startswith(SMOOTH_ATTR + "."):
            quantizer = next(iter(node.users))
            module = cast(SmoothScale, gm.get_submodule(str(node.target)))
            out[str(quantizer.target)[len(ACTIVATIONS_ATTR) + 1 :]] = int(module.inverse_scale.numel())
    return out


def restore_smoothing(gm: fx.GraphModule, groups: dict[str, int]) -> None:
    """The `SmoothScale` modules of a saved model, with placeholder scales (the state dict fills them in)."""
    if not groups:
        return
    qnodes = {
        str(n.target)[len(ACTIVATIONS_ATTR) + 1 :]: n
        for n in gm.graph.nodes
        if n.op == "call_module" and str(n.target).startswith(ACTIVATIONS_ATTR + ".")
    }
    _insert(gm, qnodes, {point_id: torch.ones(channels) for point_id, channels in groups.items()})
