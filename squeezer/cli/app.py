"""The `squeezer` command's Typer app: one module of commands per area (see the package docstring)."""

from __future__ import annotations

import typer

from squeezer.cli import configs, jobs, searches, server

app = typer.Typer(help="Squeezer: accuracy-aware neural-network compression.", no_args_is_help=True)
server.register(app)
jobs.register(app)
searches.register(app)
configs.register(app)
