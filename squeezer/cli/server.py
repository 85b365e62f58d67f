"""Commands that run the service: serve (embedded defaults), services (the running ones), worker, keys,
db migrations."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer

from squeezer.settings import Settings, client_settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

P = ParamSpec("P")
R = TypeVar("R")
# what `pip install 'squeezer[service]'` adds that these commands import; the client install lacks them
SERVICE_PACKAGES = ("sqlalchemy", "alembic", "fastapi", "celery", "uvicorn")

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)


def needs_service(command: Callable[P, R]) -> Callable[P, R]:
    """Commands that run the service say which extra they need on an install without it (the client, or the
    library alone), before they import anything of it."""

    @functools.wraps(command)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        missing = [name for name in SERVICE_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            _fail(
                f"'squeezer {command.__name__.replace('_', ' ')}' runs the service, which this install lacks "
                f"({', '.join(missing)}): pip install 'squeezer[service]'"
            )
        return command(*args, **kwargs)

    return checked


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(db_app, name="db")
    app.command()(worker)
    app.command()(recover)
    app.command()(serve)
    app.command()(services)


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from squeezer.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url()))


@db_app.command("upgrade")
@needs_service
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION."""
    from squeezer.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url(), revision)
    typer.echo(f"database at {revision}: {settings.resolved_database_url()}")


@db_app.command("downgrade")
@needs_service
def db_downgrade(revision: str = "base") -> None:
    """Revert migrations down to REVISION."""
    from squeezer.db.migrate import downgrade

    downgrade(get_settings().resolved_database_url(), revision)
    typer.echo(f"database at {revision}")


@keys_app.command("ls")
@needs_service
def keys_ls() -> None:
    """Every key: id, prefix (the start of the secret), name, created, revoked. Secrets are never shown."""
    from squeezer.api.keys import list_keys

    with _sessions(get_settings())() as session:
        rows = list_keys(session)
    typer.echo(f"{'id':32}  {'prefix':10}  {'created':16}  {'revoked':16}  name")
    for row in rows:
        revoked = _when(row.revoked_at) if row.revoked_at else "-"
        typer.echo(f"{row.id:32}  {row.prefix:10}  {_when(row.created_at):16}  {revoked:16}  {row.name}")


@keys_app.command("create")
@needs_service
def keys_create(name: str) -> None:
    """Create an API key and print it (it is stored hashed; this is the only time it is shown)."""
    from squeezer.api.keys import create_key

    with _sessions(get_settings())() as session:
        _, secret = create_key(session, name)
    typer.echo(secret)


@keys_app.command("revoke")
@needs_service
def keys_revoke(key: Annotated[str, typer.Argument(help="the key's id, or its name when one live key has it")]) -> None:
    """Revoke a key: every request with it is refused (401) from now on; its jobs and files stay."""
    from squeezer.api.keys import hash_key, keys_named, revoke_key

    settings = get_settings()
    with _sessions(settings)() as session:
        rows = keys_named(session, key)
        live = [r for r in rows if r.revoked_at is None]
        if not rows:
            _fail(f"no key with the id or name {key!r} ('squeezer keys ls' lists them)")
        if len(live) > 1:
            listed = "\n".join(f"  {r.id}  {r.prefix}  created {_when(r.created_at)}" for r in live)
            _fail(f"{len(live)} live keys are named {key!r}; revoke one by its id:\n{listed}")
        row = live[0] if live else rows[0]
        if not revoke_key(session, row):
            typer.echo(f"key {row.id} ({row.name}) was already revoked at {_when(row.revoked_at)}")
            return
        typer.echo(f"revoked key {row.id} ({row.name}, {row.prefix}...)")
    path = settings.key_file()  # serve's own key: serve makes a new one only when the file is gone
    if path.is_file() and hash_key(path.read_text(encoding="utf-8").strip()) == row.key_hash:
        typer.echo(f"it was the key in {path}: delete that file and restart 'squeezer serve' for a new one")


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else ""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@needs_service
def worker(
    nice: Annotated[int, typer.Option(min=0, max=19, help="lower the worker's CPU priority by this much")] = 0,
    exit_with_parent: Annotated[
        bool, typer.Option(hidden=True, help="stop (SIGTERM) when the process that started it exits")
    ] = False,
) -> None:
    """Run one worker process (one per GPU; CPU when there is none)."""
    from squeezer.worker.celery_app import run_worker

    if exit_with_parent:
        from squeezer.worker.lifetime import die_with_parent

        die_with_parent(os.getppid(), signal.SIGTERM)
    if nice:
        os.nice(nice)
    run_worker(get_settings())


@needs_service
def recover() -> None:
    """Requeue running jobs whose worker stopped beating, once (the API also does this periodically)."""
    from squeezer.jobs.queue import CeleryQueue, configured_celery
    from squeezer.jobs.transitions import recover_stale_jobs

    settings = get_settings()
    queue = CeleryQueue(configured_celery(settings))
    done = recover_stale_jobs(
        _sessions(settings), queue.enqueue, settings.stale_after_s, settings.max_attempts, settings.requeue_after_s
    )
    typer.echo(", ".join(f"{k}: {len(v)}" for k, v in done.items()))


@needs_service
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="worker processes: a search runs this many candidates at once")
    ] = 1,
) -> None:
    """The API and its workers on the embedded defaults (SQLite, SQLite broker, local files)."""
    import uvicorn

    from squeezer.api import create_app
    from squeezer.client.discovery import LocalService, client_url
    from squeezer.db.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    secret, path = local_key(settings)
    # the SDK and the CLI find this service from any folder through this per-user record
    record = LocalService(client_url(host, port), secret, os.getpid(), str(settings.home.resolve()))
    record_path = record.publish()
    env = {**os.environ, "SQUEEZER_HOME": str(settings.home)}
    # training takes every core it gets; on one machine the API must still answer status polls promptly.
    # --exit-with-parent: should this process die without the `finally` below (SIGKILL), the worker stops too.
    command = [sys.executable, "-m", "squeezer.cli", "worker", "--nice", "10", "--exit-with-parent"]
    if workers > 1 and "OMP_NUM_THREADS" not in env:  # the cores shared out, not each worker taking all
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    worker_processes = [subprocess.Popen(command, env=env) for _ in range(workers)]
    typer.echo(
        f"Squeezer API on http://{host}:{port} (docs: /docs)\nAPI key: {secret}\nkey file: {path} "
        f"(and {record_path}, for the CLI and the SDK in any folder)"
    )
    # uvicorn re-raises SIGINT / SIGTERM after its graceful shutdown; both must come through the `finally`
    # (SIGTERM's default action would end this process before it), which waits for the worker to stop.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        record.withdraw()  # first: the API no longer answers, and the workers may take a while to stop
        _stop_workers(worker_processes)


def local_key(settings: Settings) -> tuple[str, Path]:
    """serve's own key and its file: the key in the file, else a new key written there (on a migrated database)."""
    from squeezer.api.keys import create_key
    from squeezer.private_files import write_private

    path = settings.key_file()
    if not path.exists():
        with _sessions(settings)() as session:
            _, secret = create_key(session, "local")
        write_private(path, secret + "\n")  # 0600 from its first byte: others never see the key
    return path.read_text(encoding="utf-8").strip(), path


def services() -> None:
    """This user's running `squeezer serve`s; `*` marks the one the CLI and the SDK use in this folder."""
    from squeezer.client import ClientError
    from squeezer.client.discovery import LocalService, find_service, same_url

    found, why = LocalService.live()
    try:
        here = find_service(None, None, client_settings())[0]
    except ClientError as exc:  # several and none for this project, or no key for SQUEEZER_URL
        here, note = "", str(exc).splitlines()[-1] if found else why
    else:
        note = "" if any(same_url(s.url, here) for s in found) else f"used here: {here}, not one of these"
    for s in found:
        mark = "*" if here and same_url(s.url, here) else " "
        typer.echo(f"{mark} {s.url}  {s.home}  pid {s.pid}  since {s.started_at}")
    if note:
        typer.echo(note)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_workers(worker_processes: list[subprocess.Popen[bytes]], grace_s: float = 60.0) -> None:
    """SIGTERM (Celery's warm shutdown): each worker stops its job at once and puts it back in the queue,
    to continue from its last completed epoch when a worker starts again; then it exits."""
    typer.echo("stopping: a running job goes back to the queue and continues from its last epoch next time")
    for worker_process in worker_processes:
        worker_process.terminate()
    for worker_process in worker_processes:
        try:
            worker_process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:  # stuck: the sweep requeues its job once its heartbeat is stale
            worker_process.kill()
            worker_process.wait()
