"""The files a job leaves in its work folder, under the names `jobs/exports.py` gives each kind: the
verified ONNX, the stripped weights, the checkpoint to resume compression elsewhere, the graphs, the
per-epoch scalars for TensorBoard and, where OpenVINO is installed on the worker, the OpenVINO IR."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer.compression.export.openvino_export import convert_onnx, verify_openvino, write_ir_archive
from squeezer.compression.export.openvino_import import openvino_available
from squeezer.compression.export.prepare import build_export_model
from squeezer.compression.export.verify import rounding_noise
from squeezer.errors import ExportError
from squeezer.jobs.exports import EXPORTS
from squeezer.worker.tensorboard import write_tensorboard

logger = logging.getLogger(__name__)


def plain_state_dict(stripped: nn.Module, keys: set[str]) -> dict[str, torch.Tensor]:
    """The stripped model's tensors under the original model's keys: a parametrized weight is stored
    as its effective (fake-quantized, masked) value, so `load_state_dict` on the user's class takes it."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, value in stripped.state_dict().items():
            parametrized = re.fullmatch(r"(?:(.*)\.)?parametrizations\.(\w+)\.original", key)
            if parametrized:  # `weight`, or nn.MultiheadAttention's `in_proj_weight`
                module, tensor = parametrized.group(1) or "", parametrized.group(2)
                key = f"{module}.{tensor}" if module else tensor
                value = getattr(stripped.get_submodule(module), tensor)
            if key in keys:
                out[key] = value.detach().cpu().clone()
    return out


def write_outputs(
    ctrl: Any, model: nn.Module, workdir: Path, model_keys: set[str], sample: torch.Tensor, warnings: list[str]
) -> dict[str, str]:
    """Every output kind -> its path; what could not be written for a reason that does not fail the
    job (an OpenVINO IR OpenVINO cannot convert) is appended to `warnings`. `sample`: a few real
    inputs the OpenVINO IR is checked on."""
    from safetensors.torch import save_file

    paths = {
        "onnx": ctrl.export_model(workdir / EXPORTS["onnx"].filename),
        "checkpoint": workdir / EXPORTS["checkpoint"].filename,
        "stripped": workdir / EXPORTS["stripped"].filename,
    }
    torch.save(
        {"state_dict": model.state_dict(), "compression_state": ctrl.get_compression_state()}, paths["checkpoint"]
    )
    # safetensors, not a pickle: whoever downloads the weights can load them without trusting us
    save_file(plain_state_dict(ctrl.strip(), model_keys), str(paths["stripped"]))
    for kind in ("original_graph", "compressed_graph"):
        if (workdir / EXPORTS[kind].filename).exists():
            paths[kind] = workdir / EXPORTS[kind].filename
    tensorboard = tensorboard_log(workdir, warnings)
    if tensorboard is not None:
        paths["tensorboard"] = tensorboard
    ir = openvino_ir(model, paths["onnx"], sample, workdir, warnings)
    if ir is not None:
        paths["openvino"] = ir
    return {k: str(v) for k, v in paths.items()}


def tensorboard_log(workdir: Path, warnings: list[str]) -> Path | None:
    """The epochs as TensorBoard event files, zipped; a log that cannot be written is a warning, not a
    failed job."""
    try:
        return write_tensorboard(workdir, workdir / EXPORTS["tensorboard"].filename)
    except Exception as exc:
        warnings.append(f"no TensorBoard log: {type(exc).__name__}: {exc}")
        logger.warning("no TensorBoard log", exc_info=True)
        return None


def openvino_ir(
    model: nn.Module, onnx_path: Path, sample: torch.Tensor, workdir: Path, warnings: list[str]
) -> Path | None:
    """The OpenVINO IR as one zip of `model.xml` + `model.bin`: OpenVINO's converter on the job's own
    verified ONNX file (not a second export: that doubled the cost), checked on OpenVINO's CPU plugin
    against the compressed model on `sample` with the ONNX export's tolerance (rounding noise included).
    None where OpenVINO is not installed, or cannot convert or reproduce the model (a warning says which)."""
    if not openvino_available():
        return None
    folder = workdir / "openvino_ir"
    try:
        xml = convert_onnx(onnx_path, folder / "model.xml")
        # the ONNX gate's allowance for float rounding (a one-step flip early in a deep net), not a bare 5%
        noise = rounding_noise(build_export_model(model), (sample,))
        verify_openvino(model, xml, (sample,), rtol=0.05, noise=noise)
        return write_ir_archive(xml, workdir / EXPORTS["openvino"].filename)
    except ExportError as exc:  # the ONNX export passed: the job keeps its result, without the IR
        warnings.append(f"no OpenVINO IR: {exc}")
        logger.warning("no OpenVINO IR: %s", exc)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
