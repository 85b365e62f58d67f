"""`import openvino` without its usage telemetry, for every part of Squeezer that runs OpenVINO."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


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
