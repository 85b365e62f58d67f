"""Search commands, through the SDK: `squeezer search` submits one; `squeezer searches ls | show | watch |
cancel` follow them. `--watch` draws the candidates as a live table and prints the front at the end;
each candidate is a job, so `squeezer jobs download <job id>` downloads its exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from squeezer.cli.jobs import KeyOption, UrlOption, _client, _recipe, _shown, console
from squeezer.client import Client, ClientError, SearchRead
from squeezer.client.errors import InvalidInput
from squeezer.client.validation import check_config, check_recipe
from squeezer.search import AccuracyBudget, CandidateSpec, ComputeBudget, SearchSettings

searches_app = typer.Typer(help="Follow and cancel searches.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.add_typer(searches_app, name="searches")


def _candidate(value: str) -> str | CandidateSpec:
    """`int8` (built in) or `NAME=config.json` (a config of the user's own, comments allowed, or a sample's
    name), checked as the service will check it before anything is uploaded."""
    if "=" not in value:
        return value
    name, path = value.split("=", 1)
    try:
        config = check_config(path)
    except InvalidInput as exc:
        raise typer.BadParameter(f"{name}: {exc.detail}", param_hint="--candidate") from exc
    return CandidateSpec(name=name, config=config)


def candidates_table(search: SearchRead) -> Table:
    result = search.result
    floor = f", budget floor {result.metric_floor:.4g}" if result.metric_floor is not None else ""
    table = Table(title=f"search {search.id}: {search.status}{floor}", title_justify="left")
    for column in (
        "candidate",
        "status",
        "epochs",
        "metric",
        "in budget",
        f"{result.runtime} ms",
        "speedup",
        "size",
        "front",
    ):
        table.add_column(column, justify="left" if column in ("candidate", "status") else "right")
    for c in result.candidates:
        mark = "★" if c.name == result.recommended else ("●" if c.on_front else "")
        table.add_row(
            Text(c.name),  # the user's own name: never markup
            c.status,
            str(c.epochs),
            _shown(c.metric) if c.metric is not None else "",
            {True: "yes", False: "no", None: ""}[c.within_budget],
            _shown(c.latency_ms) if c.latency_ms is not None else "",
            f"{c.speedup:.2f}x" if c.speedup is not None else "",
            f"{c.size_bytes / 1024:.0f} KiB" if c.size_bytes is not None else "",
            mark,
        )
    return table


def _summary(search: SearchRead) -> None:
    result = search.result
    console.print(f"front (best {result.objective} first): {', '.join(result.front) or 'none'}")
    best = result.best
    if result.keep_fp32:
        console.print("[yellow]recommended: keep the FP32 model[/yellow]", markup=True)
    elif best is None:
        console.print("[yellow]no candidate finished within the accuracy budget[/yellow]")
    else:
        speed = ""
        if best.speedup:
            slower = " (not faster)" if best.speedup <= 1 else ""
            speed = f", {best.speedup:.2f}x FP32's speed in {result.runtime}{slower}"
        console.print(f"recommended: [green]{best.name}[/green] (job {best.job_id}): metric {best.metric:.4g}{speed}")
    if result.recommendation_note:
        console.print(result.recommendation_note, markup=False, highlight=False)
    console.print(f"{result.epochs_spent} epochs in {result.wall_time_s or 0:.0f} s")


def _watch(client: Client, search: SearchRead) -> SearchRead:
    with Live(candidates_table(search), console=console, refresh_per_second=4) as live:
        search = client.searches.wait(search, on_change=lambda s: live.update(candidates_table(s)))
        live.update(candidates_table(search))
    console.print()  # the live table's last frame ends without a newline
    _summary(search)
    return search


def search(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a torch.export archive (.pt2)")],
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="training data, .npz or .safetensors")],
    val: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="validation data, .npz or .safetensors")],
    budget: Annotated[
        float, typer.Option(help="accuracy the model may lose (metric points, or % with --relative)")
    ] = 1.0,
    relative: Annotated[bool, typer.Option(help="--budget is percent of the FP32 metric")] = False,
    objective: Annotated[str, typer.Option(help="latency | size | both")] = "latency",
    runtime: Annotated[str, typer.Option(help="onnxruntime | openvino: where latency is measured")] = "onnxruntime",
    batch_size: Annotated[int, typer.Option(min=1, help="batch size latency is measured at")] = 1,
    candidate: Annotated[
        list[str] | None, typer.Option(help="a built-in name, or NAME=config.json; repeat it (default: built-ins)")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="epochs for the whole search, split evenly")] = None,
    max_time: Annotated[float | None, typer.Option(help="wall-time budget in seconds")] = None,
    no_early_stopping: Annotated[bool, typer.Option(help="run every candidate to its end")] = False,
    recipe: Annotated[str | None, typer.Option(help="training recipe: a JSON file or inline JSON")] = None,
    lr: Annotated[float | None, typer.Option(help="recipe learning rate")] = None,
    name: Annotated[str | None, typer.Option(help="search name (default: the model file's name)")] = None,
    watch: Annotated[bool, typer.Option(help="draw the candidates as a live table until the search ends")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Search compression methods for the model: candidates run as jobs in parallel, the result is the
    Pareto front of accuracy against measured latency/size and a recommended model."""
    key = "maximal_relative_accuracy_degradation" if relative else "maximal_absolute_accuracy_degradation"
    try:
        settings = SearchSettings(
            accuracy=AccuracyBudget.model_validate({key: budget}),
            objective=objective,  # type: ignore[arg-type]
            runtime=runtime,  # type: ignore[arg-type]
            batch_size=batch_size,
            candidates=[_candidate(c) for c in candidate] if candidate else None,
            budget=ComputeBudget(max_total_epochs=max_epochs, max_wall_time_s=max_time),
            early_stopping=not no_early_stopping,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with _client(url, api_key) as client:
        checked_recipe = check_recipe(_recipe(recipe, None, lr))
        found = client.searches.create(
            name or model.stem,
            client.artifacts.upload(model, "model"),
            client.artifacts.upload(train, "dataset"),
            client.artifacts.upload(val, "dataset"),
            settings,
            checked_recipe,
        )
        console.print(f"submitted search {found.id} with {len(found.result.candidates)} candidates")
        if watch:
            _finish(_watch(client, found))


def _finish(search: SearchRead) -> None:
    if search.status != "succeeded" or search.result.recommended is None:
        raise typer.Exit(1)


@searches_app.command("ls")
def list_searches(
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20, url: UrlOption = None, api_key: KeyOption = None
) -> None:
    """Searches, newest first."""
    with _client(url, api_key) as client:
        page = client.searches.list(limit=limit)
    table = Table("id", "name", "status", "candidates", "recommended", "created")
    for s in page.items:
        table.add_row(  # the names are the user's: never markup
            s.id,
            Text(s.name),
            s.status,
            str(len(s.result.candidates)),
            Text(s.result.recommended or ""),
            _shown(s.created_at),
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total}")


@searches_app.command("show")
def show(search_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """The candidates, the front and the recommendation."""
    with _client(url, api_key) as client:
        found = client.searches.get(search_id)
    console.print(candidates_table(found))
    _summary(found)


@searches_app.command("watch")
def watch_search(search_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Follow a search as a live table until it ends (exit 1 when nothing was found within the budget)."""
    with _client(url, api_key) as client:
        _finish(_watch(client, client.searches.get(search_id)))


@searches_app.command("cancel")
def cancel(search_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel every candidate not finished; finished ones keep their exports."""
    with _client(url, api_key) as client:
        try:
            found = client.searches.cancel(search_id)
        except ClientError as exc:
            console.print(Text("error: ", style="red").append(str(exc), style=""))
            raise typer.Exit(2) from exc
    console.print(f"search {found.id}: {found.status}")
