"""Which BatchNorm an export folds: the one whose channels are, one for one, the output channels of the
conv or Linear before it (`channel_source`), and timm's BatchNormAct2d whose activation stays (`norm_act_tail`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import fx, nn

from squeezer.compression.graph.surgery import original_class
from squeezer.compression.graph.trace import tensor_meta

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_aten = torch.ops.aten
# x.reshape_as(y) reads only y's shape; as fx methods and as the aten ops of a lifted torch.export graph
_SHAPE_OF_OTHER = ("reshape_as", "view_as", "expand_as", _aten.reshape_as.default, _aten.view_as.default)
_SHAPE_READS = ("size", "dim", _aten.sym_size.int)


def norm_act_tail(bn: nn.Module) -> nn.Module | None:
    """What is left of timm's BatchNormAct2d (BatchNorm, then `drop`, then `act`) once its BatchNorm is
    folded into the conv before it; None for any other module. Unfolded, it keeps onnxruntime from
    fusing that conv (EfficientNet-Lite0 ran at 0.30x of FP32 speed in INT8)."""
    cls = original_class(bn)
    if cls.__name__ != "BatchNormAct2d" or not cls.__module__.startswith("timm."):
        return None
    return nn.Sequential(cast(nn.Module, bn.drop), cast(nn.Module, bn.act))


def channel_source(bn: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The conv or Linear call whose output channels are, one for one, the channels that the BatchNorm call
    `bn` normalizes, its output used on the way to `bn` only; None where folding would not be exact.

    A conv's channels are axis 1, BatchNorm's axis. A Linear's are its last axis: the same only when
    BatchNorm gets them as (N, C), the Linear's own 2-D output or its output with the leading axes merged
    (timm's LeViT: `bn(linear(x).flatten(0, 1))`). On (N, L, C), BatchNorm1d normalizes L: never folded.
    """
    src = bn.args[0]
    if not (isinstance(src, fx.Node) and _one_value_use(src)):
        return None
    if src.op == "call_module" and isinstance(modules[str(src.target)], CONVS):
        return src
    if original_class(modules[str(bn.target)]) is not nn.BatchNorm1d:
        return None
    shape = tensor_meta(src)
    if shape is None or len(shape) != 2:
        return None
    if _merges_leading_axes(src):  # (..., C) -> (M, C) in row-major order: the same C channels
        inner = src.args[0]
        if not (isinstance(inner, fx.Node) and _one_value_use(inner)):
            return None
        inner_shape = tensor_meta(inner)
        if inner_shape is None or inner_shape[-1] != shape[-1]:
            return None
        src = inner
    if src.op == "call_module" and isinstance(modules[str(src.target)], nn.Linear):
        return src
    return None


def _one_value_use(node: fx.Node) -> bool:
    """`node`'s value has one user; any others read its shape only (LeViT's `reshape_as(h)`), which a fold keeps."""
    shape_only = [
        u
        for u in node.users
        if u.op in ("call_method", "call_function")
        and (
            (u.target in _SHAPE_OF_OTHER and u.args[0] is not node)
            or u.target in _SHAPE_READS
            or (u.target is getattr and u.args[1:] == ("shape",))
        )
    ]
    return len(node.users) - len(shape_only) == 1


def _merges_leading_axes(node: fx.Node) -> bool:
    """A reshape: one that keeps the last axis merges the leading ones (the caller checks the shapes)."""
    if node.op == "call_method":
        return node.target in ("flatten", "reshape", "view")
    return node.op == "call_function" and node.target in (torch.flatten, torch.reshape)
