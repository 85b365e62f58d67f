"""Settings from the environment (`SQUEEZER_*`): the service's, also from a `.env` file, read once via
`get_settings()`; the SDK's and the CLI's via `client_settings()`, never from a `.env`.

The defaults are the embedded setup: SQLite, a broker on SQLite, files under `./.squeezer/`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SQUEEZER_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".squeezer"), description="where the embedded database, broker and files live")
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite:///<home>/squeezer.db")
    broker_url: str = Field(default="", description="Celery broker; default sqla+sqlite:///<home>/broker.db")
    storage_url: str = Field(default="", description="artifact store directory; default <home>/artifacts")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    rate_limit: str = Field(default="1200/minute", description="requests per key, in `limits` notation")
    rate_limit_storage: str = Field(default="memory://", description="where counts live; redis://... to share them")
    auth_failure_limit: str = Field(
        default="30/minute", description="wrong keys per client address before it gets 429, in `limits` notation"
    )
    max_active_jobs_per_key: int = Field(default=20, ge=1, description="queued + running jobs one key may have")
    max_storage_bytes_per_key: int = Field(default=20 * 1024**3, ge=1, description="bytes of uploads per key")
    heartbeat_s: float = Field(default=10.0, gt=0, description="how often a worker stamps its running job")
    stale_after_s: float = Field(
        default=60.0, gt=0, description="a running job without a heartbeat this long is requeued"
    )
    max_attempts: int = Field(default=3, ge=1, description="claims of one job before a crashing job is failed")
    requeue_after_s: float = Field(default=300.0, gt=0, description="a queued job's message is sent again this often")
    sweep_interval_s: float = Field(default=15.0, gt=0, description="how often the API looks for stale jobs")
    sandbox: Literal["landlock", "process"] = Field(
        default="landlock",
        description="how a worker runs a job: landlock (own process, confined; Linux 6.7+) or process (own process, "
        "no credentials, unconfined: only for trusted uploads)",
    )
    url: str = Field(default="http://127.0.0.1:8000", description="the API the SDK and the CLI talk to")
    api_key: str = Field(default="", description="the SDK's and the CLI's key; default: the key file of serve")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'squeezer.db').resolve()}"

    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.home / 'broker.db').resolve()}"

    def key_file(self) -> Path:
        """Where `squeezer serve` keeps its local API key, so the CLI and the SDK find it unconfigured."""
        return self.home / "api_key"

    def resolved_storage_dir(self) -> Path:
        return Path(self.storage_url) if self.storage_url else self.home / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()


class ClientSettings(Settings):
    """The SDK's and the CLI's settings: the real environment only. A `.env` in the current folder may
    come with a cloned repository; were its SQUEEZER_URL read, the key this user keeps in the key file or
    the local service's record would go to whatever host it names."""

    model_config = SettingsConfigDict(env_prefix="SQUEEZER_", env_file=None, extra="ignore")


def client_settings() -> Settings:
    return ClientSettings()
