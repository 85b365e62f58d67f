"""Finding the local service from any folder: `squeezer serve` records its URL and key per user.

The record is `$XDG_STATE_HOME/squeezer/local.json` (default `~/.local/state/squeezer/local.json`),
a 0600 file in a 0700 folder, holding {url, api_key, pid, home}. The SDK and the CLI read it when
neither a URL nor a key was given and the current folder has no key file of its own. A record
whose process has exited is stale and ignored; `LocalService.read` says why it found nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from squeezer.client import errors
from squeezer.settings import Settings


def state_dir() -> Path:
    """The per-user state folder of the XDG base directory spec."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "squeezer"


def local_service_file() -> Path:
    return state_dir() / "local.json"


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


@dataclass(frozen=True)
class LocalService:
    url: str
    api_key: str
    pid: int
    home: str

    def publish(self, path: Path | None = None) -> Path:
        """Replace the record atomically; the key is readable by this user only.

        A live record of another process on the same URL is kept: that process holds the port, so
        this one is about to fail to bind it and must not leave its own dead record behind.
        """
        path = path or local_service_file()
        current, _ = LocalService.read(path)
        if current is not None and current.pid != self.pid and same_url(current.url, self.url):
            return path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".local-", suffix=".json")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(self), f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: Path | None = None) -> tuple[LocalService | None, str]:
        """The live record, or None and a sentence saying why there is none (for error messages)."""
        path = path or local_service_file()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = cls(str(data["url"]), str(data["api_key"]), int(data["pid"]), str(data["home"]))
        except FileNotFoundError:
            return None, f"no 'squeezer serve' has run as this user ({path} does not exist)"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"{path} is unreadable ({exc}); run 'squeezer serve' again to rewrite it"
        if not _pid_alive(record.pid):
            return None, (
                f"the local service recorded in {path} ({record.url}, pid {record.pid}) is no longer running; "
                "start it with 'squeezer serve'"
            )
        return record, ""


def find_service(url: str | None, api_key: str | None, settings: Settings) -> tuple[str, str]:
    """The URL and key to use: given ones, then SQUEEZER_URL / SQUEEZER_API_KEY, then the key file in
    SQUEEZER_HOME (`./.squeezer/api_key`), then the running local service's record.

    The record's key goes only to the record's own URL, never to another server.
    """
    url = url or (settings.url if "url" in settings.model_fields_set else None)
    key_file = settings.key_file()
    from_file = not (api_key or settings.api_key) and key_file.is_file()
    key = api_key or settings.api_key or (key_file.read_text(encoding="utf-8").strip() if from_file else "")
    if url and key:
        return url.rstrip("/"), key
    local, why = LocalService.read()
    if local is not None and from_file and Path(local.home) != settings.home.resolve():
        local = None  # the key file here belongs to another service; its URL is unknown
    url = url or (local.url if local is not None else settings.url)
    if not key and local is not None:
        if same_url(url, local.url):
            key = local.api_key
        else:
            why = f"the local service runs on {local.url}, not {url}"
    if not key:
        raise errors.ClientError(
            f"no API key for {url}: pass api_key= (--api-key), set SQUEEZER_API_KEY, or start the service "
            f"with 'squeezer serve' in any folder; {why}"
        )
    return url.rstrip("/"), key
