"""Commands that use the service through the SDK: submit, and jobs ls | show | watch | cancel | download.

The URL and key come from --url / --api-key, SQUEEZER_URL / SQUEEZER_API_KEY, the key file that
`squeezer serve` writes in its folder, or the records of the running local services (client/discovery.py).
Failures print the service's message and exit with status 2; `watch` and `submit --watch` exit with 1
when the job did not succeed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from squeezer.client import Client, ClientError, JobRead
from squeezer.client.progress import make_console
from squeezer.client.validation import check_config, check_recipe
from squeezer.jobs.exports import EXPORTS
from squeezer.jobs.status import JobStatus

jobs_app = typer.Typer(help="Follow, cancel and download jobs.", no_args_is_help=True)
console = make_console()
UrlOption = Annotated[str | None, typer.Option("--url", envvar="SQUEEZER_URL", help="the service's URL")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="SQUEEZER_API_KEY", help="an API key")]


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(quantize)
    app.add_typer(jobs_app, name="jobs")


@contextmanager
def _client(url: str | None, api_key: str | None) -> Iterator[Client]:
    try:
        with Client(url, api_key) as client:
            yield client
    except ClientError as exc:
        console.print(Text("error: ", style="red").append(str(exc), style=""))  # verbatim: no markup in messages
        raise typer.Exit(2) from exc


def _recipe(recipe: str | None, epochs: int | None, lr: float | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if recipe:
        text = Path(recipe).read_text(encoding="utf-8") if Path(recipe).is_file() else recipe
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not a JSON file or JSON object: {exc}", param_hint="--recipe") from exc
    if epochs is not None:
        values["epochs"] = epochs
    if lr is not None:
        values["lr"] = lr
    return values


def _shown(value: Any) -> str:
    """A value for people: 4 significant digits, UTC timestamps to the second, JSON for lists."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _rows(prefix: str, values: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted name, shown value) for every set value; nested dicts (`result`) become dotted names."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _rows(f"{prefix}{key}.", value)
        elif value is not None:
            yield f"{prefix}{key}", _shown(value)


def _finished(job: JobRead) -> None:
    """One line with the outcome, the error verbatim (brackets and all), then the job's warnings."""
    colour = {"succeeded": "green", "failed": "red"}.get(job.status, "yellow")
    line = Text(f"job {job.id} ").append(job.status, style=colour)
    console.print(line.append(f": {job.error}" if job.error else ""))
    _warnings(job)
    if job.status != "succeeded":
        raise typer.Exit(1)


def submit(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a torch.export archive (.pt2)")],
    config: Annotated[str, typer.Option(help="NNCF config: a JSON file (comments allowed) or a sample's name")],
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="training data, .npz or .safetensors")],
    val: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="validation data, .npz or .safetensors")],
    recipe: Annotated[str | None, typer.Option(help="training recipe: a JSON file or inline JSON")] = None,
    epochs: Annotated[int | None, typer.Option(help="recipe epochs (configs without accuracy-aware training)")] = None,
    lr: Annotated[float | None, typer.Option(help="recipe learning rate")] = None,
    name: Annotated[str | None, typer.Option(help="job name (default: the model file's name)")] = None,
    priority: Annotated[int, typer.Option(min=0, max=9)] = 0,
    watch: Annotated[bool, typer.Option(help="follow the job with a progress bar until it ends")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a model, a config and data, and submit a compression job."""
    with _client(url, api_key) as client:
        checked_recipe = check_recipe(_recipe(recipe, epochs, lr))  # InvalidInput (exit 2) before any upload
        config_json = check_config(config)  # read once: comments dropped, sample names resolved
        model_artifact = client.artifacts.upload(model, "model")
        train_artifact = client.artifacts.upload(train, "dataset")
        val_artifact = client.artifacts.upload(val, "dataset")
        job = client.jobs.create(
            name or model.stem,
            model_artifact,
            config_json,
            train_artifact,
            val_artifact,
            checked_recipe,
            priority,
        )
        console.print(f"submitted job {job.id} ({job.status})")
        if watch:
            _finished(client.jobs.wait(job, progress=True))


def quantize(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a torch.export archive (.pt2)")],
    calib: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="calibration samples (.npz / .safetensors; y not needed)")
    ],
    val: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="validation data with labels (the metric)")
    ] = None,
    max_drop: Annotated[
        float | None, typer.Option(help="accuracy control: metric points the INT8 model may lose (needs --val)")
    ] = None,
    subset_size: Annotated[int, typer.Option(min=1, help="calibration samples used")] = 300,
    model_type: Annotated[str | None, typer.Option(help="'transformer' for BERT-like models (SmoothQuant)")] = None,
    config: Annotated[
        str | None, typer.Option(help="NNCF config (a JSON file or a sample's name): target device / runtime, scopes")
    ] = None,
    name: Annotated[str | None, typer.Option(help="job name (default: the model file's name)")] = None,
    priority: Annotated[int, typer.Option(min=0, max=9)] = 0,
    watch: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Post-training INT8 quantization: calibration samples in, a verified INT8 model out, no training."""
    if max_drop is not None and val is None:
        raise typer.BadParameter("--max-drop needs --val: accuracy control measures the metric on it")
    with _client(url, api_key) as client:
        recipe = check_recipe(  # InvalidInput (exit 2) before any upload
            {"mode": "ptq", "subset_size": subset_size, "max_drop": max_drop, "model_type": model_type}
        )
        config_json = check_config(config, need_compression=False) if config is not None else None
        model_artifact = client.artifacts.upload(model, "model")
        calib_artifact = client.artifacts.upload(calib, "dataset")
        val_artifact = client.artifacts.upload(val, "dataset") if val is not None else None
        job = client.jobs.create(
            name or model.stem, model_artifact, config_json, calib_artifact, val_artifact, recipe, priority
        )
        console.print(f"submitted post-training quantization job {job.id} ({job.status})")
        if watch:
            done = client.jobs.wait(job)
            if done.result is not None and done.result.metric is not None:
                uncompressed = done.result.uncompressed_metric
                fp32 = f" (FP32 {uncompressed:.4g})" if uncompressed is not None else ""
                console.print(f"metric {done.result.metric:.4g}{fp32}")
            _finished(done)


@jobs_app.command("ls")
def list_jobs(
    status: Annotated[JobStatus | None, typer.Option(help="only jobs in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """The newest jobs of this key."""
    with _client(url, api_key) as client:
        page = client.jobs.list(status=status, limit=limit)
    table = Table(
        Column("id", no_wrap=True, min_width=32),  # ids are copied from here: never wrapped
        "name",
        Column("status", no_wrap=True),
        "epoch",
        "metric",
        "rate",
        "created",
    )
    for job in page.items:
        metric = f"{job.current_metric:.4g}" if job.current_metric is not None else ""
        rate = f"{job.compression_rate:.3g}" if job.compression_rate is not None else ""
        total = f"/{job.total_epochs}" if job.total_epochs else ""
        if job.total_epochs and job.terminal and job.epoch < job.total_epochs:
            total = f" (of ≤{job.total_epochs})"  # done early (met its budget), not stalled at 0/3
        table.add_row(  # the name is the user's: never markup
            job.id, Text(job.name), job.status, f"{job.epoch}{total}", metric, rate, f"{job.created_at:%Y-%m-%d %H:%M}"
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total}")


@jobs_app.command("show")
def show(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """A job's state, its per-epoch history and its exports."""
    with _client(url, api_key) as client:
        job, metrics, exports = client.jobs.get(job_id), client.jobs.metrics(job_id), client.jobs.exports(job_id)
    summary = Table(show_header=False)
    shown = job.model_dump()
    if shown["result"]:  # latency and warnings get their own table and lines below
        shown["result"] = {k: v for k, v in shown["result"].items() if k not in ("latency", "warnings")}
    for field, value in _rows("", shown):
        # a job's error or name, and quantizer ids in its statistics (`Block[0]/LayerNorm[norm1]`), hold
        # [brackets]: never markup (rich dropped `[norm1]`, so norm1's and norm2's rows read the same)
        summary.add_row(Text(field), Text(value))
    console.print(summary)
    _latency(job)
    if metrics:
        history = Table("epoch", "stage", "metric", "budget", "rate", "loss", "seconds", title="metrics")
        for m in metrics:
            rate = "" if m.compression_rate is None else f"{m.compression_rate:.3g}"
            loss = "" if m.loss is None else f"{m.loss:.4g}"
            row = (
                str(m.epoch),
                m.stage,
                f"{m.metric:.4g}",
                f"{m.accuracy_budget:.3g}",
                rate,
                loss,
                f"{m.wall_time_s:.1f}",
            )
            history.add_row(*row)
        console.print(history)
    if exports:
        files = Table("kind", "file", "bytes", "sha256", title="exports")
        for e in exports:
            files.add_row(e.kind, e.filename, str(e.size_bytes), e.sha256[:16])
        console.print(files)


def _latency(job: JobRead) -> None:
    """The exported files timed on the worker's CPU, and the job's warnings (e.g. INT8 is not faster)."""
    if job.latency:
        table = Table("runtime", "FP32 ms", "compressed ms", "speedup", "batch", title="latency on the worker's CPU")
        for runtime, t in job.latency.items():
            colour = "green" if t.speedup >= 1 else "red"
            speedup = f"[{colour}]{t.speedup:.2f}x[/{colour}]"
            table.add_row(runtime, f"{t.fp32_ms:.4g}", f"{t.compressed_ms:.4g}", speedup, str(t.batch_size))
        console.print(table)
    _warnings(job)


def _warnings(job: JobRead) -> None:
    for warning in job.warnings:
        console.print(Text("warning: ", style="yellow").append(warning, style=""))


@jobs_app.command("watch")
def watch_job(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Follow a job with a progress bar until it ends; exit status 1 unless it succeeded."""
    with _client(url, api_key) as client:
        job = client.jobs.wait(job_id, progress=True)
    _finished(job)


@jobs_app.command("cancel")
def cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Stop a job: a queued one at once, a running one within a second (its last finished epoch is kept)."""
    with _client(url, api_key) as client:
        job = client.jobs.cancel(job_id)
    console.print(f"job {job.id} {job.status}")


@jobs_app.command("download")
def download(
    job_id: str,
    kind: Annotated[
        str,
        typer.Option(help="; ".join(f"{kind}: {e.description}" for kind, e in EXPORTS.items())),
    ] = "onnx",
    output: Annotated[Path, typer.Option("-o", "--output", help="a file, or a folder for the service's name")] = Path(),
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Download one of a job's exports (checked against its SHA-256)."""
    with _client(url, api_key) as client:
        path = client.jobs.download(job_id, kind, output)
    console.print(f"wrote {path}")
