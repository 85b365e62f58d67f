"""What the API may learn from an upload without running it: a `.pt2` archive's input and output shapes,
input dtypes and token-id vocabulary (from the JSON graph inside it; its pickled parts are never opened)
and a dataset's array shapes, dtypes, label and id ranges and finiteness (from the array headers and one
streamed pass: `datasets.py`). Jobs whose data do not fit are refused at submit time; the worker checks
again on the real tensors.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezer.api.datasets import scan_npz, scan_safetensors
from squeezer.api.errors import ApiError
from squeezer.api.unpack import TooLarge, open_zip, read_member
from squeezer.settings import MAX_ARCHIVE_MEMBER_BYTES, MAX_DATASET_BYTES

if TYPE_CHECKING:
    from squeezer.compression.config.models import InputInfo


# torch.export's serialized ScalarType numbers (torch/_export/serde/schema.py), by numpy's names
SCALAR_TYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float16",
    7: "float32",
    8: "float64",
    12: "bool",
    13: "bfloat16",
    28: "uint16",
    34: "uint32",
    35: "uint64",
}
INTEGER_DTYPES = {"uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"}
FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}
EMBEDDING_OP = "torch.ops.aten.embedding.default"


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


# The export the static-batch message shows, as written (a test runs it). torch.export specializes a
# dimension of size 1, so from a batch-1 example it refuses Dim('batch'): the example is doubled first.
DYNAMIC_BATCH_EXPORT = (
    "torch.export.save(torch.export.export(model, (torch.cat([x, x]),), "
    "dynamic_shapes=({0: torch.export.Dim('batch', min=1)},)), 'model.pt2')"
)


def _static_batch(filename: str, inputs: list[list[int | None]]) -> ApiError:
    shape = next(s for s in inputs if s and s[0] is not None)
    return ApiError(
        422,
        "Model has a static batch size",
        f"{filename} was exported with a static batch of {shape[0]} (input shape {shape}), so it cannot train on "
        "batches; export it with a dynamic batch dimension, from an example batch of at least 2 (torch fixes a "
        "batch of 1 and refuses Dim('batch') on it). For an example input x of any batch: "
        f"{DYNAMIC_BATCH_EXPORT} (the SDK's Client.compress does this)",
    )


def _output_classes(program: dict[str, Any]) -> list[str]:
    """Classes in the model's output structure that are neither tensors nor Python's containers (an HF
    `ModelOutput`): the worker cannot rebuild them without the user's code, so it cannot load the archive."""
    try:
        spec = json.loads(program["graph_module"]["module_call_graph"][0]["signature"]["out_spec"])[1]
    except (KeyError, IndexError, TypeError, ValueError):
        return []
    found, todo = [], [spec]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if isinstance(kind, str) and not kind.startswith(("builtins.", "collections.")):
            found.append(kind)
        todo.extend(node.get("children_spec") or [])
    return sorted(set(found))


def _returns_classes(filename: str, classes: list[str]) -> ApiError:
    return ApiError(
        422,
        "Model returns a custom class",
        f"{filename} returns {', '.join(classes)}, which cannot be loaded without its code; export a model that "
        "returns a tensor, a tuple or a dict of tensors (Client.compress does this for HF ModelOutput: it keeps "
        "the set fields, logits first)",
    )


def _vocab(graph: dict[str, Any], name: str) -> int | None:
    """The smallest embedding table indexed by input `name` directly: its ids must be below it."""
    sizes = []
    for node in graph["nodes"]:
        if node.get("target") != EMBEDDING_OP:
            continue
        args = {a.get("name"): a.get("arg", {}).get("as_tensor", {}).get("name") for a in node.get("inputs", [])}
        if args.get("indices") == name and args.get("weight") in graph["tensor_values"]:
            rows = _dim(graph["tensor_values"][args["weight"]]["sizes"][0])
            if rows is not None:
                sizes.append(rows)
    return min(sizes) if sizes else None


def model_signature(
    path: Path, filename: str = "model.pt2", max_member_bytes: int = MAX_ARCHIVE_MEMBER_BYTES
) -> dict[str, Any] | None:
    """{"inputs": [[None, 1, 32, 32]], "outputs": [[None, 10]], "input_dtypes": ["float32"],
    "input_vocab": [None]} from `models/model.json` (for token ids: ["int64"] and the embedding's rows).

    422 when the file is not a torch.export archive, its model.json unpacks past `max_member_bytes`, its
    inputs have a static batch or it returns a class that cannot be loaded without its code; None when the
    graph is laid out in a way this code does not know (the worker still checks).
    """
    try:
        with open_zip(path) as archive:
            names = archive.namelist()
            name = next((n for n in names if n.endswith("models/model.json")), None)
            if name is None:
                raise _not_an_export(filename, names)
            program = json.loads(read_member(archive, name, max_member_bytes))
    except ApiError:
        raise
    except TooLarge as exc:
        raise ApiError(422, "Archive member too large", f"{filename}: {exc}", limit_bytes=exc.limit) from exc
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

        names = [
            spec["user_input"]["arg"]["as_tensor"]["name"]
            for spec in signature["input_specs"]
            if spec.get("user_input", {}).get("arg", {}).get("as_tensor") is not None
        ]
        found: dict[str, Any] = {
            "inputs": shapes(signature["input_specs"], "user_input"),
            "outputs": shapes(signature["output_specs"], "user_output"),
            "input_dtypes": [SCALAR_TYPES.get(graph["tensor_values"][n].get("dtype")) for n in names],
            "input_vocab": [_vocab(graph, n) for n in names],
        }
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # an archive layout this torch does not write; the worker still checks
    if any(s and s[0] is not None for s in found["inputs"]):
        raise _static_batch(filename, found["inputs"])
    classes = _output_classes(program)
    if classes:
        raise _returns_classes(filename, classes)
    return found


def dataset_summary(
    path: Path,
    filename: str,
    max_member_bytes: int = MAX_ARCHIVE_MEMBER_BYTES,
    max_dataset_bytes: int = MAX_DATASET_BYTES,
) -> dict[str, Any]:
    """Shapes, label range and finiteness of a `.npz` / `.safetensors` dataset, read from its headers and
    one streamed pass (never loaded whole); 422 when it is not one, when a header claims other bytes than
    the file holds, when its arrays unpack past `max_dataset_bytes` (or a safetensors header is over
    `max_member_bytes`), or when it holds NaN or inf."""
    try:
        if filename.endswith(".safetensors"):
            scan = partial(scan_safetensors, max_header_bytes=max_member_bytes, max_bytes=max_dataset_bytes)
        else:
            scan = partial(scan_npz, max_bytes=max_dataset_bytes)
        try:
            arrays = scan(path, ("x", "y"))
        except KeyError:
            arrays = scan(path, ("x",))  # calibration samples for post-training quantization need no labels
    except KeyError as exc:
        found = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        raise ApiError(
            422, "Invalid dataset", f"{filename} must hold an array 'x' (and 'y' for labels); has {found}"
        ) from exc
    except TooLarge as exc:
        raise ApiError(422, "Dataset too large", f"{filename}: {exc}", limit_bytes=exc.limit) from exc
    except Exception as exc:  # pickled object arrays, truncated files, wrong headers
        raise ApiError(422, "Invalid dataset", f"{filename} is not a readable .npz / .safetensors file: {exc}") from exc
    x, y = arrays["x"], arrays.get("y")
    if y is None:
        if not x.shape:
            raise ApiError(422, "Invalid dataset", f"{filename}: x is a scalar; samples go along its first axis")
    elif not x.shape or not y.shape or x.shape[0] != y.shape[0]:
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
        "x_min": x.min,  # integer x (token ids) only
        "x_max": x.max,
        "y_shape": y.shape if y is not None else None,  # None: features only (calibration data)
        "y_dtype": y.dtype if y is not None else None,
        "y_min": y.min if y is not None else None,
        "y_max": y.max if y is not None else None,
    }


def _fits(shape: list[int | None], actual: list[int]) -> bool:
    """`actual` matches `shape`, where None (a dynamic dimension) matches anything."""
    return len(shape) == len(actual) and all(d is None or d == a for d, a in zip(shape, actual, strict=True))


def check_job_data(
    model: dict[str, Any] | None, data: dict[str, Any] | None, task: str, field: str, labels: bool = True
) -> None:
    """422 naming `field` when the dataset cannot feed the model (the same rules as the worker's);
    `labels=False`: calibration samples, whose labels (if any) are not read."""
    if data is None:
        return

    def unfit(detail: str) -> ApiError:
        return ApiError(422, "Data do not fit the model", f"{field}: {detail}", path=f"$.{field}")

    if labels and "y_shape" in data and data["y_shape"] is None:
        raise unfit(
            "the dataset has no labels (array 'y'); training and validation data need them (calibration "
            "samples for recipe mode 'ptq' do not)"
        )

    inputs = model.get("inputs") if model else None
    if inputs and len(inputs) == 1 and not _fits(inputs[0][1:], data["x_shape"][1:]):
        raise unfit(f"samples have shape {tuple(data['x_shape'][1:])}, the model takes {tuple(inputs[0][1:])}")
    dtypes = model.get("input_dtypes") if model else None
    if dtypes and len(dtypes) == 1 and dtypes[0] is not None:
        _check_x_values(dtypes[0], (model or {}).get("input_vocab", [None])[0], data, unfit)
    if not labels:
        return
    outputs = model.get("outputs") if model else None
    output = outputs[0] if outputs and outputs[0] else None  # several outputs: the first are the logits
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


def _check_x_values(model_dtype: str, vocab: int | None, data: dict[str, Any], unfit: Any) -> None:
    """Token ids for an integer input (>= 0, below the embedding's rows), floats for a float input."""
    x_dtype = data["x_dtype"]
    if model_dtype in INTEGER_DTYPES:
        allowed = f"in [0, {vocab - 1}]" if vocab is not None else ">= 0"
        if x_dtype not in INTEGER_DTYPES:
            raise unfit(f"x is {x_dtype}, the model takes {model_dtype} token ids: x must be integer ids {allowed}")
        low, high = data.get("x_min"), data.get("x_max")
        if low is not None and high is not None and (low < 0 or (vocab is not None and high >= vocab)):
            raise unfit(f"token ids must be {allowed} (the model's vocabulary), found [{low}, {high}]")
    elif model_dtype in FLOAT_DTYPES and x_dtype in INTEGER_DTYPES:
        raise unfit(
            f"x is {x_dtype}, the model takes {model_dtype} features: x must be a float array "
            "(integer x is read as token ids, for a model whose input is int64)"
        )


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
        dtypes = (model or {}).get("input_dtypes") or []
        if i < len(dtypes) and dtypes[i] in FLOAT_DTYPES and info.type == "long":
            raise ApiError(
                422,
                "Config does not fit the model",
                f"config: input_info type 'long' feeds token ids, but the model's input is {dtypes[i]}; "
                "set type 'float' or leave it out (for an int64 input the worker uses 'long' itself)",
                path="$.config.input_info" + ("" if single else f"[{i}]") + ".type",
            )
