"""`squeezer` command line: run the service on the embedded defaults, a worker, keys, migrations.

squeezer serve            # migrations, a local API key, one worker process, the API on :8000
squeezer worker           # a worker against SQUEEZER_DATABASE_URL / SQUEEZER_BROKER_URL
squeezer keys create NAME
squeezer db upgrade | downgrade
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from sqlalchemy.orm import Session, sessionmaker

from squeezer.settings import Settings, get_settings

app = typer.Typer(help="Squeezer: accuracy-aware neural-network compression.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

KEY_FILE = "api_key"


def key_file(settings: Settings) -> Path:
    """Where `serve` keeps the local key, so the CLI and the SDK find it without configuration."""
    return settings.home / KEY_FILE


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from squeezer.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url()))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION."""
    from squeezer.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url(), revision)
    typer.echo(f"database at {revision}: {settings.resolved_database_url()}")


@db_app.command("downgrade")
def db_downgrade(revision: str = "base") -> None:
    """Revert migrations down to REVISION."""
    from squeezer.db.migrate import downgrade

    downgrade(get_settings().resolved_database_url(), revision)
    typer.echo(f"database at {revision}")


@keys_app.command("create")
def keys_create(name: str) -> None:
    """Create an API key and print it (it is stored hashed; this is the only time it is shown)."""
    from squeezer.api.keys import create_key

    with _sessions(get_settings())() as session:
        _, secret = create_key(session, name)
    typer.echo(secret)


@app.command()
def worker() -> None:
    """Run one worker process (one per GPU; CPU when there is none)."""
    from squeezer.worker.celery_app import run_worker

    run_worker(get_settings())


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """The API and one worker on the embedded defaults (SQLite, SQLite broker, local files)."""
    import uvicorn

    from squeezer.api import create_app
    from squeezer.api.keys import create_key
    from squeezer.db.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    path = key_file(settings)
    if not path.exists():
        with _sessions(settings)() as session:
            _, secret = create_key(session, "local")
        path.write_text(secret + "\n", encoding="utf-8")
        path.chmod(0o600)
    secret = path.read_text(encoding="utf-8").strip()
    env = {**os.environ, "SQUEEZER_HOME": str(settings.home)}
    worker_process = subprocess.Popen([sys.executable, "-m", "squeezer.worker.celery_app"], env=env)
    typer.echo(f"Squeezer API on http://{host}:{port} (docs: /docs)\nAPI key: {secret}\nkey file: {path}")
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        worker_process.terminate()
        worker_process.wait(timeout=30)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
