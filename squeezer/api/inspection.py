"""What the API may learn from an upload without running it: a `.pt2` archive's input and output shapes
(from the JSON graph inside it; its pickled parts are never opened) and a dataset's array shapes, dtypes,
label range and finiteness (from the array headers and one streamed pass: `datasets.py`). Jobs whose data
do not fit are refused at submit time; the worker checks again on the real tensors.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezer.api.datasets import scan_npz, scan_safetensors
from squeezer.api.errors import ApiError

if TYPE_CHECKING:
    from squeezer.compression.config.models import InputInfo


def _dim(size: dict[str, Any]) -> int | None:
    return size.get("as_int")  # None: a symbolic (dynamic) dimension


def _not_an_export(filename: str, names: list[str]) -> ApiError:
    saved = any(n.endswith("data.pkl") for n in names)
    what = "a torch.save file (pickled weights), " if saved else "a zip file, "
    return ApiError(
        422,
        "Invalid model archive",
        f"{filename} is {what}not a torch.export archive (it has no models/model.json); export the model with "
        "torch.export.export(model, (example,), dynamic_shapes=...) and save it with torch.export.save(program, "
        "'model.pt2'), or let the SDK do both: Client.compress(model, example, ...)",
    )


def _static_batch(filename: str, inputs: list[list[int | None]]) -> ApiError:
    shape = next(s for s in inputs if s and s[0] is not None)
    return ApiError(
        422,
        "Model has a static batch size",
        f"{filename} was exported with a static batch of {shape[0]} (input shape {shape}), so it cannot train on "
        "batches; export it with a dynamic batch dimension: torch.export.export(model, (example,), "
        "dynamic_shapes=({0: torch.export.Dim('batch')},)) (the SDK's Client.compress does this)",
    )


def model_signature(path: Path, filename: str = "model.pt2") -> dict[str, Any] | None:
    """{"inputs": [[None, 1, 32, 32]], "outputs": [[None, 10]]} from `models/model.json`.

    422 when the file is not a torch.export archive or its inputs have a static batch; None when the
    graph is laid out in a way this code does not know (the worker still checks).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            name = next((n for n in names if n.endswith("models/model.json")), None)
            if name is None:
                raise _not_an_export(filename, names)
            program = json.loads(archive.read(name))
    except ApiError:
        raise
    except Exception as exc:  # a broken zip, an unknown compression, a model.json that is not JSON
        detail = f"{filename} is not a readable torch.export archive: {exc}"
        raise ApiError(422, "Invalid model archive", detail) from exc
    try:
        graph = program["graph_module"]["graph"]
        signature = program["graph_module"]["signature"]

        def shapes(specs: list[dict[str, Any]], key: str) -> list[list[int | None]]:
            found = []
            for spec in specs:
                tensor = spec.get(key, {}).get("arg", {}).get("as_tensor")
                if tensor is not None:
                    found.append([_dim(s) for s in graph["tensor_values"][tensor["name"]]["sizes"]])
            return found

        found = {
            "inputs": shapes(signature["input_specs"], "user_input"),
            "outputs": shapes(signature["output_specs"], "user_output"),
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # an archive layout this torch does not write; the worker still checks
    if any(s and s[0] is not None for s in found["inputs"]):
        raise _static_batch(filename, found["inputs"])
    return found


def dataset_summary(path: Path, filename: str) -> dict[str, Any]:
    """Shapes, label range and finiteness of a `.npz` / `.safetensors` dataset, read from its headers and
    one streamed pass (never loaded whole); 422 when it is not one, or when it holds NaN or inf."""
    try:
        scan = scan_safetensors if filename.endswith(".safetensors") else scan_npz
        arrays = scan(path, ("x", "y"))
    except KeyError as exc:
        found = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        raise ApiError(422, "Invalid dataset", f"{filename} must hold arrays 'x' and 'y'; has {found}") from exc
    except Exception as exc:  # pickled object arrays, truncated files, wrong headers
        raise ApiError(422, "Invalid dataset", f"{filename} is not a readable .npz / .safetensors file: {exc}") from exc
    x, y = arrays["x"], arrays["y"]
    if not x.shape or not y.shape or x.shape[0] != y.shape[0]:
        raise ApiError(
            422,
            "Invalid dataset",
            f"{filename}: x has shape {x.shape} and y {y.shape}; they must have the same number of samples",
        )
    for name, array in arrays.items():
        if array.non_finite:
            raise ApiError(
                422,
                "Invalid dataset",
                f"{filename}: {name} has {array.non_finite} NaN or infinite values (of {math.prod(array.shape)}); "
                "training data must be finite: drop or impute those samples",
            )
    return {
        "x_shape": x.shape,
        "x_dtype": x.dtype,
        "y_shape": y.shape,
        "y_dtype": y.dtype,
        "y_min": y.min,
        "y_max": y.max,
    }


def _fits(shape: list[int | None], actual: list[int]) -> bool:
    """`actual` matches `shape`, where None (a dynamic dimension) matches anything."""
    return len(shape) == len(actual) and all(d is None or d == a for d, a in zip(shape, actual, strict=True))


def check_job_data(model: dict[str, Any] | None, data: dict[str, Any] | None, task: str, field: str) -> None:
    """422 naming `field` when the dataset cannot feed the model (the same rules as the worker's)."""
    if data is None:
        return

    def unfit(detail: str) -> ApiError:
        return ApiError(422, "Data do not fit the model", f"{field}: {detail}", path=f"$.{field}")

    inputs = model.get("inputs") if model else None
    if inputs and len(inputs) == 1 and not _fits(inputs[0][1:], data["x_shape"][1:]):
        raise unfit(f"samples have shape {tuple(data['x_shape'][1:])}, the model takes {tuple(inputs[0][1:])}")
    outputs = model.get("outputs") if model else None
    output = outputs[0] if outputs and len(outputs) == 1 and outputs[0] else None
    if task == "regression" and output is not None and not _fits(output[1:], data["y_shape"][1:]):
        raise unfit(
            f"regression targets have shape {tuple(data['y_shape'][1:])}, the model outputs {tuple(output[1:])}"
        )
    if task == "classification":
        if data["y_min"] is None or len(data["y_shape"]) != 1:
            raise unfit(
                f"classification labels must be a 1-D integer array, got {data['y_dtype']} {tuple(data['y_shape'])}"
            )
        classes = output[-1] if output is not None else None
        if data["y_min"] < 0 or (classes is not None and data["y_max"] >= classes):
            allowed = f"[0, {classes - 1}]" if classes is not None else "non-negative"
            raise unfit(f"labels must be in {allowed}, found [{data['y_min']}, {data['y_max']}]")


def check_input_info(model: dict[str, Any] | None, config: dict[str, Any], infos: list[InputInfo] | None) -> None:
    """422 naming the config's `input_info` when it does not describe the model's inputs (the batch may differ)."""
    inputs = model.get("inputs") if model else None
    if not infos or not inputs:
        return
    single = isinstance(config.get("input_info"), dict)  # NNCF allows one object for a single input
    if len(infos) != len(inputs):
        raise ApiError(
            422,
            "Config does not fit the model",
            f"config: input_info describes {len(infos)} inputs, the model takes {len(inputs)}",
            path="$.config.input_info",
        )
    for i, (info, shape) in enumerate(zip(infos, inputs, strict=True)):
        if not _fits(shape[1:], info.sample_size[1:]):
            where = "$.config.input_info" + ("" if single else f"[{i}]") + ".sample_size"
            expected = ["B", *("any" if d is None else d for d in shape[1:])]
            raise ApiError(
                422,
                "Config does not fit the model",
                f"config: input_info sample_size {info.sample_size} does not match the model's input "
                f"{shape} (as [batch, ...]: {expected}); fix input_info or leave it out to take the model's",
                path=where,
            )
