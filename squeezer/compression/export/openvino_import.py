"""`import openvino` without its usage telemetry, for every part of Squeezer that runs OpenVINO.

It lives in the library (the IR export needs it) and needs nothing but the standard library, so that
`squeezer.runtime` takes it from here without the library ever importing the runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from squeezer.errors import ExportError

INSTALL_HINT = "pip install squeezer[openvino]"


class OpenVINOUnavailableError(ExportError, ImportError):
    """The `openvino` package is not installed."""


def import_openvino_quietly() -> ModuleType:
    """`import openvino`; raises ImportError when it is not installed.

    Importing `openvino` also imports its converter, which (through the `openvino-telemetry` package
    it depends on) writes a client id under ~/intel and sends usage events over the network unless
    the user opted out. A library must do neither, so while openvino is first imported its telemetry
    module reads as absent, and the converter takes the no-op stub OpenVINO ships for that case.
    """
    # imported already (by the user, or by us): taken as it is
    blocked = "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        return importlib.import_module("openvino")
    finally:
        if blocked:
            sys.modules.pop("openvino_telemetry", None)


def openvino_available() -> bool:
    """Whether `openvino` can be imported here (without importing it)."""
    return "openvino" in sys.modules or importlib.util.find_spec("openvino") is not None


def import_openvino() -> ModuleType:
    """`import openvino` without its telemetry (`import_openvino_quietly`); a missing package is an
    ExportError that says how to install it."""
    try:
        return import_openvino_quietly()
    except ImportError as exc:
        raise OpenVINOUnavailableError(
            f"the openvino package is needed for OpenVINO IR and OpenVINO runs, and it cannot be imported ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
