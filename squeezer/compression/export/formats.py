"""NNCF's `save_format` ("onnx", "onnx_<opset>" or "openvino") and `model_args`, on plain models and inputs.

`CompressionController.export_model` reads the controller (its model, example inputs and export source)
and hands the results here: the export package knows no controller, so that the controller may depend
on it and never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer.compression.export.onnx_export import export_onnx
from squeezer.compression.export.openvino_export import export_openvino

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class SaveFormat:
    """What a `save_format` asks for: OpenVINO IR, or ONNX at `opset` (None: the lowest the graph allows)."""

    openvino: bool = False
    opset: int | None = None

    @classmethod
    def parse(cls, save_format: str | None) -> SaveFormat:
        if save_format == "openvino":
            return cls(openvino=True)
        if save_format in (None, "onnx"):
            return cls()
        if not (isinstance(save_format, str) and save_format.startswith("onnx_") and save_format[5:].isdigit()):
            raise ValueError(
                f"unsupported save_format {save_format!r}; use 'onnx', 'onnx_<opset>' (13 or newer) or 'openvino'"
            )
        opset = int(save_format[5:])
        if opset < 13:
            raise ValueError(f"opset {opset} cannot hold per-channel QuantizeLinear; use 13 or newer")
        return cls(opset=opset)


def export_inputs(example_inputs: Inputs, model_args: Any) -> Inputs:
    """One sample of the example inputs (the file's batch axis is dynamic), with NNCF's `model_args` added:
    a tuple of extra positional arguments whose last item may be a dict of keyword arguments."""
    args, kwargs = example_inputs
    args = tuple(a[0:1] if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: v[0:1] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    if model_args is not None:
        extra = model_args if isinstance(model_args, tuple) else (model_args,)
        if extra and isinstance(extra[-1], dict):
            kwargs = {**kwargs, **extra[-1]}
            extra = extra[:-1]
        args = args + tuple(extra)
    return args, kwargs


def export_as(
    source: nn.Module,
    save_path: str | Path,
    save_format: SaveFormat,
    inputs: Inputs,
    *,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    verify: bool,
    verify_inputs: Inputs | None,
) -> Path:
    """`source` written as `save_format` asks: QDQ ONNX (`export_onnx`) or OpenVINO IR (.xml and .bin)
    converted from that same verified ONNX (`export_openvino`)."""
    args, kwargs = inputs
    if save_format.openvino:
        return export_openvino(
            source,
            save_path,
            args,
            kwargs,
            input_names=input_names,
            output_names=output_names,
            verify=verify,
            verify_inputs=verify_inputs,
        )
    return export_onnx(
        source,
        save_path,
        args,
        kwargs,
        opset=save_format.opset,
        input_names=input_names,
        output_names=output_names,
        verify=verify,
        verify_inputs=verify_inputs,
    )
