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

# The largest member of an upload read whole: a .pt2's models/model.json, a .safetensors header. Real
# model.json files are small (random-init exports: BERT-base 0.8 MiB, ResNet-50 0.4 MiB, and a .pt2 under the
# 512 MiB upload limit holds at most ~130M float32 weights), so 16 MiB leaves 20x headroom. It is not higher
# because parsing the JSON takes up to ~23x its size (a list of empty lists): the limit caps that at ~370 MiB.
MAX_ARCHIVE_MEMBER_BYTES = 16 << 20
# What a dataset's arrays may unpack to: the worker loads them whole, and a deflated .npz turns 1 MiB of
# upload into 1 GiB of zeros. 4 GiB is 8x the upload limit; int64 token ids with padding deflate ~5.5x.
MAX_DATASET_BYTES = 4 << 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SQUEEZER_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".squeezer"), description="where the embedded database, broker and files live")
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite:///<home>/squeezer.db")
    broker_url: str = Field(default="", description="Celery broker; default sqla+sqlite:///<home>/broker.db")
    storage_url: str = Field(default="", description="artifact store directory; default <home>/artifacts")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_archive_member_bytes: int = Field(
        default=MAX_ARCHIVE_MEMBER_BYTES,
        ge=1,
        description="the largest upload member read whole (model.json, a safetensors header)",
    )
    max_dataset_bytes: int = Field(
        default=MAX_DATASET_BYTES, ge=1, description="what a dataset's x and y may hold, unpacked"
    )
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
    accept_weaker_sandbox: bool = Field(
        default=False,
        description="run jobs under Landlock older than ABI 6 (Linux 6.12), which cannot stop a job signalling "
        "other processes of the worker's user or using their abstract UNIX sockets; off: such a worker refuses jobs",
    )
    # limits of every job process (worker/limits.py); 0 = sized to this machine when the worker starts
    job_max_wall_time_s: float = Field(
        default=24 * 3600.0, gt=0, description="a job running longer fails with 'deadline' (a recipe may ask for less)"
    )
    job_max_memory_bytes: int = Field(
        default=0, ge=0, description="resident memory of a job's processes; 0: 75% of RAM"
    )
    job_max_cpu_time_s: float = Field(default=0, ge=0, description="CPU seconds of a job process; 0: wall time x cores")
    job_max_processes: int = Field(default=64, ge=1, description="processes a job may run at once")
    job_max_open_files: int = Field(default=4096, ge=64, description="open files of a job process")
    job_max_disk_bytes: int = Field(default=16 * 1024**3, ge=1, description="size of a job's folder (outputs, state)")
    job_poll_s: float = Field(default=1.0, gt=0, description="how often a worker checks its job's limits and cancel")
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
