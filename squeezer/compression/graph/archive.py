"""Load a `torch.export` archive (.pt2) without unpickling anything from it.

`torch.export.load` unpickles: weights and constants marked `use_pickle`, custom and opaque objects,
and the sample inputs, where a failed `weights_only` load falls back to a full unpickle. An uploaded
archive is untrusted, so `load_exported_program` first reads the archive's JSON manifests and refuses
any pickled payload, then loads it with every `torch.load` held to `weights_only=True` and plain
`pickle.loads` refused. Archives that `torch.export.save` writes for ordinary modules (raw tensor
bytes + JSON) load unchanged.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from squeezer.errors import SqueezerError


class UnsafeArchive(SqueezerError):
    """The archive carries a pickled object (or is not an archive); nothing in it was unpickled."""


def _pickled_entries(archive: zipfile.ZipFile) -> list[str]:
    """Entries the manifests say are pickles, and legacy pickle files."""
    found = []
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-2] in ("weights", "constants") and name.endswith(".pt"):
            found.append(name)  # legacy format: one pickle with every weight / constant
        if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
            config = json.loads(archive.read(name))
            for fqn, meta in config.get("config", {}).items():
                path = meta.get("path_name", "")
                if meta.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
                    found.append(f"{name}: {fqn} ({path})")
    return found


def _refuse_pickle(*_: Any, **__: Any) -> Any:
    raise pickle.UnpicklingError("unpickling arbitrary objects from an uploaded archive is not allowed")


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    original = torch.load

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original(f, *args, **kwargs)

    with (
        mock.patch("torch.load", load),
        mock.patch("pickle.loads", _refuse_pickle),
        mock.patch("torch._C._pickle_load_obj", _refuse_pickle),
    ):
        yield


def load_exported_program(path: str | Path) -> torch.export.ExportedProgram:
    """`torch.export.load`, but an `UnsafeArchive` error instead of unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = _pickled_entries(archive)
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, AttributeError) as exc:
        raise UnsafeArchive(f"not a torch.export archive (.pt2): {exc}") from exc
    if pickled:
        raise UnsafeArchive(f"the archive carries pickled objects, which are not loaded: {', '.join(pickled[:5])}")
    try:
        with _weights_only(), open(path, "rb") as f:  # a file object: store paths have no .pt2 suffix
            return torch.export.load(f)
    except pickle.UnpicklingError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), str(exc))
        raise UnsafeArchive(f"the archive carries a pickled object that is not plain tensors ({reason})") from exc
