"""`squeezer` command line.

Running the service (`server.py`):
    squeezer serve            # migrations, a local API key, one worker process, the API on :8000
    squeezer services         # this user's running `serve`s, and which one the CLI uses in this folder
    squeezer worker           # a worker against SQUEEZER_DATABASE_URL / SQUEEZER_BROKER_URL
    squeezer keys ls | create NAME | revoke ID_OR_NAME
    squeezer db upgrade | downgrade

Using it (`jobs.py`, through the SDK):
    squeezer submit model.pt2 --config int8.json --train train.npz --val val.npz --watch
    squeezer jobs ls | show ID | watch ID | cancel ID | download ID [--kind onnx] [-o DIR]

Sample configs (`configs.py`), usable by name wherever a config file goes:
    squeezer configs ls | show NAME

Searching (`searches.py`): candidates run as jobs, the result is a Pareto front and a recommendation:
    squeezer search model.pt2 --train train.npz --val val.npz --budget 1.0 --objective latency --watch
    squeezer searches ls | show ID | watch ID | cancel ID
"""

from __future__ import annotations

import sys


def main() -> None:
    """The `squeezer` command. The library alone (`pip install squeezer`) has no CLI packages: say which
    extra brings them rather than fail with a traceback."""
    try:
        from squeezer.cli.app import app
    except ModuleNotFoundError as exc:
        sys.exit(
            f"error: the squeezer command needs the package {exc.name!r}: "
            "pip install 'squeezer[client]' (or the torch-free 'squeezer-client')"
        )
    app()
