"""The export copy of a compressed model (`build_export_model`): on CPU in eval mode, BatchNorm folded into
the conv or Linear whose output it normalizes (exact for per-channel weight grids: the int8 values stay,
the channel scale is multiplied), and every quantizer replaced by a plain fake-quantize call with
Python-number scales (uint8 activations, int8 weights: what onnxruntime fuses)."""

from __future__ import annotations

import copy
import re
from typing import cast

import torch
from torch import fx, nn
from torch.ao.quantization import FakeQuantize
from torch.nn.utils import parametrize

from squeezer.compression.export.bn_fold import channel_source, norm_act_tail
from squeezer.compression.export.qdq_modules import (
    ActivationQDQ,
    WeightQDQ,
    bcast,
    grid_of,
    on_export_grid,
    weight_quantizer,
)
from squeezer.compression.graph.modules import registration
from squeezer.compression.graph.surgery import original_class, replace_submodule, unparametrized_copy
from squeezer.compression.quantization.placement import ACTIVATIONS_ATTR, attention_projections
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.errors import ExportError

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _to_export_weight(module: nn.Module, bn: nn.Module | None) -> nn.Module:
    """`module` with `bn` folded in and a per-channel int grid on its weight (if it was quantized)."""
    quantizer = weight_quantizer(module)
    grid = grid_of(quantizer) if quantizer is not None else None
    with torch.no_grad():
        weight = cast(torch.Tensor, module.weight).detach().clone()  # fake-quantized when quantized
        old_bias = cast(torch.Tensor | None, getattr(module, "bias", None))
        bias = old_bias.detach().clone() if old_bias is not None else None
    module = unparametrized_copy(module)
    out_axis = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    registered = registration(module)
    if registered is not None:  # e.g. Hugging Face's Conv1D keeps its weight (in, out)
        out_axis = registered["weight_dim"]
    n_out = weight.shape[out_axis]
    k = torch.ones(n_out)
    if bn is not None:
        norm = cast(nn.modules.batchnorm._BatchNorm, bn)
        assert norm.running_var is not None and norm.running_mean is not None
        affine = norm.weight is not None  # BatchNorm(affine=False) has no scale and shift
        gamma = norm.weight.detach() if affine else torch.ones(n_out)
        beta = norm.bias.detach() if affine else torch.zeros(n_out)
        k = gamma / torch.sqrt(norm.running_var + norm.eps)
        b = bias if bias is not None else torch.zeros(n_out)
        bias = (b - norm.running_mean) * k + beta
    qdq: WeightQDQ | None = None
    if grid is None:
        new_weight = weight * bcast(k, out_axis, weight.dim())
    else:
        new_weight, qdq = on_export_grid(weight, grid, out_axis, k)
    module.weight = nn.Parameter(new_weight.float(), requires_grad=False)
    if bias is not None:
        module.bias = nn.Parameter(bias.float(), requires_grad=False)
    if qdq is not None:
        parametrize.register_parametrization(module, "weight", qdq)
    return module


def _quantized_projections(module: nn.Module) -> list[str]:
    """The in-projection matrices of an nn.MultiheadAttention that carry a weight quantizer."""
    if not isinstance(module, nn.MultiheadAttention):
        return []
    return [t for t in attention_projections(module) if weight_quantizer(module, t) is not None]


def _to_export_attention(module: nn.Module) -> nn.Module:
    """nn.MultiheadAttention with its quantized in-projections on a per-row int8 grid; its forward applies
    them as `linear`, so each exports as DequantizeLinear(int8) -> MatMul (out_proj is a layer of its own)."""
    tensors = _quantized_projections(module)
    grids = {t: grid_of(cast(nn.Module, weight_quantizer(module, t))) for t in tensors}
    with torch.no_grad():
        values = {t: cast(torch.Tensor, getattr(module, t)).detach().clone() for t in tensors}  # on the grid
    new = unparametrized_copy(module)
    for t in tensors:
        grid, weight = grids[t], values[t]
        qdq = None if grid is None else on_export_grid(weight, grid, 0, torch.ones(weight.shape[0]))
        setattr(new, t, nn.Parameter(weight if qdq is None else qdq[0], requires_grad=False))
        if qdq is not None:
            parametrize.register_parametrization(new, t, qdq[1])
    return new


def build_export_model(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode copy of `model` made of ops that export to standard QDQ ONNX."""
    export = copy.deepcopy(model).cpu().eval()
    _check_finite_ranges(export)
    folded: dict[nn.Module, nn.Module] = {}
    if isinstance(export, fx.GraphModule):
        modules = dict(export.named_modules())
        for node in list(export.graph.nodes):
            if node.op != "call_module" or not isinstance(modules[str(node.target)], BATCH_NORMS):
                continue
            src = channel_source(node, modules)
            if src is None:
                continue
            layer = modules[str(src.target)]
            bn = modules[str(node.target)]
            tail = norm_act_tail(bn)
            # the exact BatchNorm classes, or a known norm + activation: a subclass may do more
            if original_class(bn) not in BATCH_NORMS and tail is None:
                continue
            if not bn.track_running_stats or layer in folded:
                continue
            folded[layer] = bn
            if tail is not None:  # the normalization goes into the conv; its activation stays
                replace_submodule(export, str(node.target), tail)
                continue
            node.replace_all_uses_with(node.args[0])
            export.graph.erase_node(node)
        _short_quantizer_targets(export)
        export.graph.lint()
        export.recompile()
    for name, module in list(export.named_modules()):
        if _quantized_projections(module):
            replace_submodule(export, name, _to_export_attention(module))
        elif module in folded or weight_quantizer(module) is not None:
            replace_submodule(export, name, _to_export_weight(module, folded.get(module)))
    for name, module in list(export.named_modules()):
        if isinstance(module, (FakeQuantizer, FakeQuantize)):
            grid = grid_of(module)
            int8 = bool(getattr(module, "int8_storage", False))  # FakeQuantizer's, kept by strip()
            replace_submodule(export, name, ActivationQDQ(grid, int8) if grid is not None else nn.Identity())
    return export


def _check_finite_ranges(model: nn.Module) -> None:
    """A quantizer whose range went NaN/inf (training diverged) cannot give an integer grid: say where."""
    bad = [
        re.sub(r"\.parametrizations\.(\w+)\.0$", r".\1", name).replace(f"{ACTIVATIONS_ATTR}.", "")
        for name, q in model.named_modules()
        if isinstance(q, FakeQuantizer) and not all(bool(torch.isfinite(p).all()) for p in q.parameters())
    ]
    if bad:
        raise ExportError(
            f"{len(bad)} quantizers have a range that is not finite (training diverged; lower the learning "
            f"rate or the compression_lr_multiplier): {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )


def _short_quantizer_targets(gm: fx.GraphModule) -> None:
    """Call activation quantizers as `aq<k>`: their ids are long and ONNX repeats names per use."""
    if not hasattr(gm, ACTIVATIONS_ATTR):
        return
    short: dict[str, str] = {}
    for node in gm.graph.nodes:
        target = str(node.target)
        if node.op == "call_module" and target.startswith(ACTIVATIONS_ATTR + "."):
            if target not in short:
                short[target] = f"aq{len(short)}"
                gm.add_submodule(short[target], gm.get_submodule(target))
            node.target = short[target]
    delattr(gm, ACTIVATIONS_ATTR)
