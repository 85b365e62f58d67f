"""The kinds of file a job exports: each one's file name, media type and what it holds.

One registry for the worker (the names it writes), the sandboxed job process (the kinds it may report:
it imports neither SQLAlchemy nor the API), the download route and the CLI's help.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportKind:
    filename: str  # in the job's work folder, in the store and in downloads
    media_type: str
    description: str


EXPORTS: dict[str, ExportKind] = {
    "onnx": ExportKind("model.onnx", "application/octet-stream", "the compressed model as ONNX, verified"),
    "stripped": ExportKind(
        "stripped_model.safetensors", "application/octet-stream", "weights for the original model class"
    ),
    "checkpoint": ExportKind(
        "compression_checkpoint.pt", "application/octet-stream", "the compression state, to resume elsewhere"
    ),
    "original_graph": ExportKind("original_graph.dot", "text/vnd.graphviz", "the FP32 model's graph"),
    "compressed_graph": ExportKind("compressed_graph.dot", "text/vnd.graphviz", "the compressed model's graph"),
    "log": ExportKind("job.log", "text/plain; charset=utf-8", "the job process's log"),
    "openvino": ExportKind(  # where the worker has openvino
        "model_openvino.zip", "application/zip", "OpenVINO IR (model.xml + model.bin), where the worker has it"
    ),
    "tensorboard": ExportKind(  # worker/tensorboard.py
        "tensorboard.zip", "application/zip", "per-epoch scalars as TensorBoard event files"
    ),
}


def filename(kind: str) -> str:
    """The file name of a kind; an unknown kind (a row from an older version) is named as itself."""
    return EXPORTS[kind].filename if kind in EXPORTS else kind


def media_type(kind: str) -> str:
    return EXPORTS[kind].media_type if kind in EXPORTS else "application/octet-stream"
