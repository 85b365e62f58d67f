"""Finding the local service from any folder: each `squeezer serve` records its URL and key per user.

One record per URL, so that several `serve`s of one user (other projects, other ports) do not take
each other's place: `$XDG_STATE_HOME/squeezer/services/<hash of the URL>.json` (default under
`~/.local/state/`), a 0600 file in a 0700 folder, holding {url, api_key, pid, home, started_at}. A
`serve` removes its own record when it stops; a record whose process has exited anyway is ignored
(and replaced by the next `serve` on that URL). The single `local.json` of earlier versions is no
longer read.

The SDK and the CLI read the records when a URL or a key was not given: the `serve` for the
current project (its SQUEEZER_HOME, or without one `.squeezer` here or in a folder above) wins,
else the only one running; with several and none for this project they stop and list them rather
than pick one, since the wrong choice would send jobs to another project's service.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from squeezer.client import errors
from squeezer.private_files import write_private
from squeezer.settings import Settings


def state_dir() -> Path:
    """The per-user state folder of the XDG base directory spec."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "squeezer"


def services_dir() -> Path:
    return state_dir() / "services"


def record_file(url: str) -> Path:
    """The record of the service on `url`: one port is served by one process at a time."""
    return services_dir() / f"{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}.json"


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to `host` (a wildcard means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:  # a host name
        pass
    return f"http://{host}:{port}"


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LocalService:
    url: str
    api_key: str
    pid: int
    home: str
    started_at: str = field(default_factory=_now)

    def publish(self) -> Path:
        """Write this service's record atomically; the key is readable by this user only.

        A live record of another process on the same URL is kept: that process holds the port, so
        this one is about to fail to bind it and must not leave its own dead record behind.
        """
        path = record_file(self.url)
        current = LocalService._load(path)
        if current is not None and current.pid != self.pid and _pid_alive(current.pid):
            return path
        for folder in (state_dir(), path.parent):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        write_private(path, json.dumps(asdict(self)))
        return path

    def withdraw(self) -> None:
        """Remove this service's record, unless another process has recorded itself on the URL since."""
        path = record_file(self.url)
        current = LocalService._load(path)
        if current is not None and current.pid == self.pid:
            path.unlink(missing_ok=True)

    @classmethod
    def _load(cls, path: Path) -> LocalService | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                str(data["url"]), str(data["api_key"]), int(data["pid"]), str(data["home"]), str(data["started_at"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def live(cls) -> tuple[list[LocalService], str]:
        """The running services' records, oldest first, and when there is none a sentence saying why."""
        records = [r for r in map(cls._load, sorted(services_dir().glob("*.json"))) if r is not None]
        alive = sorted((r for r in records if _pid_alive(r.pid)), key=lambda r: r.started_at)
        if alive:
            return alive, ""
        if not records:
            return [], f"no 'squeezer serve' is running as this user ({services_dir()} holds no record of one)"
        ended = "; ".join(f"{r.url}, pid {r.pid}" for r in records)
        them = "service recorded" if len(records) == 1 else "services recorded"
        verb = "is" if len(records) == 1 else "are"
        return [], (
            f"the local {them} in {services_dir()} ({ended}) {verb} no longer running; start it with 'squeezer serve'"
        )


def project_home(settings: Settings) -> Path:
    """This project's SQUEEZER_HOME: the one set, else the nearest `.squeezer` folder from here up (as git
    finds `.git`, so that a project's subfolders are in the project), else `./.squeezer`."""
    home = settings.home.resolve()
    if "home" in settings.model_fields_set or home.is_dir():
        return home
    return next((p / ".squeezer" for p in home.parent.parents if (p / ".squeezer").is_dir()), home)


def _one(candidates: list[LocalService], situation: str) -> LocalService | None:
    """The only candidate; several are listed in the error rather than one of them chosen silently."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    listed = "\n".join(f"  {s.url}  (serve for {s.home}, pid {s.pid})" for s in candidates)
    raise errors.ClientError(
        f"{situation}:\n{listed}\nchoose one with url= (--url) or SQUEEZER_URL, or work in its project folder"
    )


def find_service(url: str | None, api_key: str | None, settings: Settings) -> tuple[str, str]:
    """The URL and key to use: given ones, then SQUEEZER_URL / SQUEEZER_API_KEY, then the key file in
    SQUEEZER_HOME (`./.squeezer/api_key`), then the record of a running local service: the one on the
    given URL, else this project's, else the only one.

    A record's key goes only to the record's own URL, never to another server; and `settings` should
    come from `client_settings()`, without a `.env` here that could name that other server.
    """
    url = url or (settings.url if "url" in settings.model_fields_set else None)
    key_file = settings.key_file()
    from_file = not (api_key or settings.api_key) and key_file.is_file()
    key = api_key or settings.api_key or (key_file.read_text(encoding="utf-8").strip() if from_file else "")
    if url and key:
        return url.rstrip("/"), key
    services, why = LocalService.live()
    if url:  # the key is missing: the record of the service on that URL holds it
        local = next((s for s in services if same_url(s.url, url)), None)
        if local is None and services:
            where = ", ".join(s.url for s in services)
            why = f"the local service{'s run' if len(services) > 1 else ' runs'} on {where}, not {url}"
    else:  # a key file here belongs to this project's service only; another's URL would not take it
        home = project_home(settings)
        mine = [s for s in services if Path(s.home) == home]
        if mine:
            local = _one(mine, f"this project ({home}) has several local services")
        else:
            local = None if from_file else _one(services, f"several local services run, none for this project ({home})")
        url = local.url if local is not None else settings.url
    if not key and local is not None:
        key = local.api_key
    if not key:
        raise errors.ClientError(
            f"no API key for {url}: pass api_key= (--api-key), set SQUEEZER_API_KEY, or start the service "
            f"with 'squeezer serve' in any folder; {why}"
        )
    return url.rstrip("/"), key
