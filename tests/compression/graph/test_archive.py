"""Uploaded .pt2 archives are loaded without unpickling: a payload that `torch.export.load` would run is
refused, and so is any entry the archive's manifests mark as pickled."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from squeezer.compression.graph.archive import UnsafeArchive, load_exported_program
from squeezer.examples.models import MLP
from squeezer.worker.runner import JobInputError, load_model


class Payload:
    """Unpickling this creates `marker`: proof that code from the archive ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _archive_bytes():
    torch.manual_seed(0)
    program = torch.export.export(MLP(hidden=8).eval(), (torch.rand(2, 64),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return program, buffer.getvalue()


def _rewrite(clean, path, replace):
    """Copy the archive, passing each entry's bytes through `replace(name, data)`."""
    with zipfile.ZipFile(io.BytesIO(clean)) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, replace(info.filename, src.read(info.filename)))
    return path


def test_a_clean_archive_loads_as_torch_loads_it(tmp_path):
    program, clean = _archive_bytes()
    (tmp_path / "m.pt2").write_bytes(clean)
    x = torch.rand(2, 64)  # exported with a static batch of 2
    torch.testing.assert_close(load_exported_program(tmp_path / "m.pt2").module()(x), program.module()(x))


def test_a_pickle_payload_in_the_sample_inputs_never_runs(tmp_path):
    _, clean = _archive_bytes()
    marker = tmp_path / "PWNED"
    payload = io.BytesIO()
    torch.save((Payload(marker),), payload)
    evil = _rewrite(
        clean,
        tmp_path / "evil.pt2",
        lambda name, data: payload.getvalue() if name.endswith("sample_inputs/model.pt") else data,
    )
    # the payload is live: plain torch.export.load (in a throw-away process) runs it
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.export.load({str(evil)!r})"], capture_output=True, timeout=120
    )
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafeArchive, match="Unsupported global: GLOBAL exec"):
        load_exported_program(evil)
    with pytest.raises(JobInputError, match="the model archive was refused"):
        load_model(evil)  # what a worker does with an upload
    assert not marker.exists()


def test_entries_marked_as_pickles_are_refused_before_loading(tmp_path):
    _, clean = _archive_bytes()

    def mark_pickled(name, data):
        if name.endswith("weights/model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    with pytest.raises(UnsafeArchive, match=r"carries pickled objects, which are not loaded: .*weights_config\.json"):
        load_exported_program(_rewrite(clean, tmp_path / "marked.pt2", mark_pickled))
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(UnsafeArchive, match=r"not a torch\.export archive"):
        load_exported_program(tmp_path / "bad.pt2")
