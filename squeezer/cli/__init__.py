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

import typer

from squeezer.cli import configs, jobs, searches, server

app = typer.Typer(help="Squeezer: accuracy-aware neural-network compression.", no_args_is_help=True)
server.register(app)
jobs.register(app)
searches.register(app)
configs.register(app)


def main() -> None:
    app()
