"""OpenVINO IR export: the verified QDQ ONNX file, converted by OpenVINO's own converter and checked on
OpenVINO's CPU plugin against the torch model before returning.

OpenVINO reads each activation QuantizeLinear/DequantizeLinear pair as a FakeQuantize and each int8
weight with its DequantizeLinear as a compressed weight (an int8 constant, Convert, Subtract,
Multiply); its CPU plugin fuses both into INT8 kernels, as it does for NNCF's export. `save_model`
stores the float weights that stay (biases, unquantized layers) as FP16, OpenVINO's default and what
its `ovc` tool writes; the plugin computes them in FP32. The IR is two files: `<name>.xml` (the graph)
and `<name>.bin` (the weights) beside it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer.compression.export.onnx_export import export_onnx, ordered_args
from squeezer.compression.export.openvino_import import (  # noqa: F401  (their import path before the move)
    OpenVINOUnavailableError,
    import_openvino,
    openvino_available,
)
from squeezer.compression.export.prepare import build_export_model
from squeezer.compression.export.verify import full_range_hint, parity_bound, rounding_noise
from squeezer.compression.init_args import flatten_tensors
from squeezer.errors import ExportError

logger = logging.getLogger(__name__)
ARCHIVE_MEMBERS = ("model.xml", "model.bin")  # the IR in one zip: what the service stores and serves


def ir_paths(save_path: str | Path) -> tuple[Path, Path]:
    """(graph .xml, weights .bin) of the IR at `save_path`, which must end in .xml."""
    path = Path(save_path)
    if path.suffix.lower() != ".xml":
        raise ExportError(
            f"an OpenVINO IR path ends in .xml (the weights go beside it as .bin), got {str(path)!r}; "
            f"e.g. {str(path.with_suffix('.xml'))!r}"
        )
    return path, path.with_suffix(".bin")


def export_openvino(
    model: nn.Module,
    save_path: str | Path,
    example_args: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    verify: bool = True,
    verify_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    rtol: float = 0.05,
) -> Path:
    """Export `model` (compressed or stripped) to OpenVINO IR at `save_path` (.xml, with .bin beside it).

    The model goes to QDQ ONNX first (`export_onnx`, checked in onnxruntime when `verify`), OpenVINO
    converts that file, and with `verify` the IR runs on OpenVINO's CPU plugin and is compared with the
    torch model under the same tolerance as the ONNX file. Returns the .xml path.
    """
    xml, weights = ir_paths(save_path)
    for target in (xml, weights):
        if target.is_symlink():
            raise ExportError(f"refusing to export to a symbolic link: {target}")
    import_openvino()  # before the ONNX export: a missing package fails fast
    xml.parent.mkdir(parents=True, exist_ok=True)
    # the intermediate ONNX goes beside the IR: that folder is writable where the system's temp folder
    # may not be (a confined job process), and it is removed with its folder either way
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}-onnx-", dir=xml.parent) as tmp:
        onnx_path = export_onnx(
            model,
            Path(tmp) / "model.onnx",
            example_args,
            example_kwargs,
            input_names=input_names,
            output_names=output_names,
            verify=verify,
            verify_inputs=verify_inputs,
            rtol=rtol,
        )
        convert_onnx(onnx_path, xml)
    if verify:
        check_args, check_kwargs = verify_inputs or (example_args, example_kwargs or {})
        ordered = ordered_args(model, check_args, check_kwargs)
        noise = rounding_noise(build_export_model(model), ordered)
        verify_openvino(model, xml, ordered, rtol, noise=noise)
    return xml


def convert_onnx(onnx_path: str | Path, save_path: str | Path) -> Path:
    """OpenVINO's converter on a QDQ ONNX file, saved as IR at `save_path` (.xml, .bin beside it).
    Float weights are stored as FP16 (OpenVINO's default), int8 weights stay int8. Returns the .xml path."""
    xml, weights = ir_paths(save_path)
    ov = import_openvino()
    try:
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    except Exception as exc:  # OpenVINO's own errors (OpConversionFailure, RuntimeError, ...)
        raise ExportError(f"OpenVINO {ov.__version__} could not convert {onnx_path}: {exc}") from exc
    logger.info("exported OpenVINO IR %s (+ %s) with OpenVINO %s", xml, weights.name, ov.__version__)
    return xml


def verify_openvino(
    model: nn.Module, xml_path: Path, args: tuple[Any, ...], rtol: float, noise: Sequence[float] | None = None
) -> float:
    """Run the IR on OpenVINO's CPU plugin and compare with `model` in eval mode; returns the max difference.
    The bound is `verify_onnx`'s (`parity_bound`, widened by the model's measured rounding `noise`).

    FP32 inference precision, so that a CPU with bf16 instructions checks the file, not bf16 rounding.
    """
    ov = import_openvino()
    reference = copy.deepcopy(model).cpu().eval()
    cpu_args = tuple(a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_tensors(reference(*cpu_args))]
    compiled = ov.Core().compile_model(str(xml_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    tensors = [a.numpy() for a in cpu_args if isinstance(a, torch.Tensor)]  # the graph's inputs, in order
    if len(tensors) != len(compiled.inputs):
        raise ExportError(f"the IR takes {len(compiled.inputs)} inputs, the model was given {len(tensors)}: {xml_path}")
    result = compiled.create_infer_request().infer(dict(enumerate(tensors)))
    actual = [np.asarray(result[output]) for output in compiled.outputs]
    if len(actual) != len(expected):
        raise ExportError(f"the IR has {len(actual)} outputs, the torch model {len(expected)}: {xml_path}")
    worst = 0.0
    for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
        if e.shape != a.shape:
            raise ExportError(f"OpenVINO output {i} has shape {a.shape}, the torch model's {e.shape}: {xml_path}")
        if not e.size:
            continue
        diff, magnitude = float(np.max(np.abs(e - a))), float(np.max(np.abs(e)))
        bound = parity_bound(e, rtol, noise[i] if noise is not None and i < len(noise) else 0.0)
        worst = max(worst, diff)
        if diff > bound:
            raise ExportError(
                f"OpenVINO output {i} differs from the torch model: largest difference {diff:.6g} "
                f"(allowed {bound:.6g}; output magnitude {magnitude:.6g}); file: {xml_path}" + full_range_hint(model)
            )
    return worst


def write_ir_archive(xml_path: str | Path, archive_path: str | Path) -> Path:
    """The IR at `xml_path` (and its .bin) as one zip holding `model.xml` and `model.bin`: one file to
    download and one checksum for a pair that only works together. Stored uncompressed: int8 weights
    barely compress, and the members can then be read without inflating them."""
    xml, weights = ir_paths(xml_path)
    archive = Path(archive_path)
    tmp = archive.with_name(archive.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for source, member in zip((xml, weights), ARCHIVE_MEMBERS, strict=True):
            zf.write(source, member)
    tmp.replace(archive)
    return archive


def read_ir_archive(archive_path: str | Path) -> Any:
    """The `openvino.Model` in a zip written by `write_ir_archive` (the service's `openvino` export),
    read from memory: `openvino.Core().compile_model(read_ir_archive(path), "CPU")` runs it."""
    ov = import_openvino()
    with zipfile.ZipFile(archive_path) as zf:
        names = set(zf.namelist())
        if not set(ARCHIVE_MEMBERS) <= names:
            raise ExportError(
                f"{archive_path} is not an OpenVINO IR archive: it holds {sorted(names)}, "
                f"expected {list(ARCHIVE_MEMBERS)}"
            )
        xml, weights = (zf.read(member) for member in ARCHIVE_MEMBERS)
    return ov.Core().read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
