"""`strip()` for quantization: trainable quantizers become frozen `torch.ao` FakeQuantize modules.

The result depends on torch alone. Weights are replaced by their fake-quantized values (on the
integer grid) and keep a frozen FakeQuantize parametrization, so the export still knows the grid
and can store int8 weights.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver
from torch.nn.utils import parametrize

from squeezer.compression.graph.surgery import replace_submodule, unparametrized_copy, weight_parametrizations
from squeezer.compression.quantization.placement import ACTIVATIONS_ATTR, QuantizerSetup
from squeezer.compression.quantization.quantizer import FakeQuantizer


def to_torch_fake_quantize(q: FakeQuantizer) -> FakeQuantize:
    step, zero_point, qmin, qmax = q.qparams()
    dtype = torch.qint8 if qmin < 0 else torch.quint8
    axis = q.axis
    if axis is None:
        fq = FakeQuantize(
            observer=MinMaxObserver, quant_min=qmin, quant_max=qmax, dtype=dtype, qscheme=torch.per_tensor_affine
        )
        fq.scale = step.reshape(1).clone()
        fq.zero_point = zero_point.reshape(1).clone()
    else:
        fq = FakeQuantize(
            observer=PerChannelMinMaxObserver,
            quant_min=qmin,
            quant_max=qmax,
            dtype=dtype,
            qscheme=torch.per_channel_affine,
            ch_axis=axis,
        )
        fq.scale = step.flatten().clone()
        fq.zero_point = zero_point.flatten().clone()
    fq.disable_observer()
    fq.enable_fake_quant(q.is_enabled)
    fq.int8_storage = q.int8_storage  # type: ignore[assignment]  # the stripped model exports the same file
    return fq.to(step.device)


def strip_quantizers(model: nn.Module, setup: QuantizerSetup) -> nn.Module:
    by_module: dict[str, list[str]] = {}
    for wp in setup.weights:  # nn.MultiheadAttention: one module, one or three quantized in-projections
        by_module.setdefault(wp.module, []).append(wp.tensor)
    for path, tensors in by_module.items():
        module = model.get_submodule(path)
        plain = unparametrized_copy(module)
        for tensor in tensors:
            quantizer = next(p for p in weight_parametrizations(module, tensor) if isinstance(p, FakeQuantizer))
            with torch.no_grad():
                on_grid = cast(torch.Tensor, getattr(module, tensor)).detach().clone()
            setattr(plain, tensor, nn.Parameter(on_grid, requires_grad=False))
            parametrize.register_parametrization(plain, tensor, to_torch_fake_quantize(quantizer))
        replace_submodule(model, path, plain)
    if setup.activations:
        container = cast(nn.ModuleDict, model.get_submodule(ACTIVATIONS_ATTR))
        for key in list(container.keys()):
            container[key] = to_torch_fake_quantize(cast(FakeQuantizer, container[key]))
    return model
