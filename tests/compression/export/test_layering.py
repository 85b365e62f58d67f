"""Export sits below the controller at import time too, where `lint-imports` cannot look: importing a
submodule runs its package's __init__, and quantization's used to import the algorithm (and through it
the controller), which made a module-level `controller -> export` import a circle."""

from __future__ import annotations

import subprocess
import sys

import pytest

ABOVE_EXPORT = ("squeezer.compression.controller", "squeezer.compression.build", "squeezer.compression.api")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["onnx_export", "openvino_export", "formats", "prepare", "verify"])
def test_an_export_module_imports_nothing_above_it(module):
    loaded = _modules_after(f"import squeezer.compression.export.{module}")
    assert loaded.isdisjoint(ABOVE_EXPORT), sorted(loaded & set(ABOVE_EXPORT))
    assert "squeezer.compression.quantization.algorithm" not in loaded


def test_the_controller_imports_first():
    """Imported before anything else of the library, the controller pulls export in without a circle."""
    loaded = _modules_after("import squeezer.compression.controller")
    assert "squeezer.compression.export.formats" in loaded
