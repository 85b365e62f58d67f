"""`squeezer configs ls | show NAME`: the sample NNCF configs that ship with Squeezer, read locally (no
service needed). Any command that takes a config file also takes a sample's name."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from squeezer.compression.config.reader import config_file
from squeezer.compression.config.samples import sample_config_names, sample_description
from squeezer.errors import ConfigError

configs_app = typer.Typer(help="The sample configs: starting points, usable by name.", no_args_is_help=True)
console = Console()  # wrapped at the terminal's width (80 when piped): descriptions are prose


def register(app: typer.Typer) -> None:
    app.add_typer(configs_app, name="configs")


@configs_app.command("ls")
def list_configs() -> None:
    """Every sample config's name and what it does."""
    table = Table("name", "what it does", title="sample configs (use a name wherever a config file goes)")
    for name in sample_config_names():
        table.add_row(name, escape(sample_description(name)))
    console.print(table)


@configs_app.command("show")
def show_config(name: Annotated[str, typer.Argument(help="a sample's name, with or without .json")]) -> None:
    """The sample's JSON, comments included: copy it to a file and edit it."""
    try:
        path = config_file(name)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    print(path.read_text(encoding="utf-8"), end="")
