"""`squeezer` command line.

Running the service (`server.py`):
    squeezer serve            # migrations, a local API key, one worker process, the API on :8000
    squeezer worker           # a worker against SQUEEZER_DATABASE_URL / SQUEEZER_BROKER_URL
    squeezer keys create NAME
    squeezer db upgrade | downgrade

Using it (`jobs.py`, through the SDK):
    squeezer submit model.pt2 --config int8.json --train train.npz --val val.npz --watch
    squeezer jobs ls | show ID | watch ID | cancel ID | download ID [--kind onnx] [-o DIR]
"""

from __future__ import annotations

import typer

from squeezer.cli import jobs, server

app = typer.Typer(help="Squeezer: accuracy-aware neural-network compression.", no_args_is_help=True)
server.register(app)
jobs.register(app)


def main() -> None:
    app()
