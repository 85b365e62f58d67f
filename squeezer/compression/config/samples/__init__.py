"""Sample NNCF configs written for Squeezer's small example models: one per algorithm and option that
users reach for first. They are plain NNCF JSON (with // comments), so they also document the format.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def sample_config_names() -> list[str]:
    """The sample configs' names, without `.json`."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def sample_config_path(name: str) -> Path:
    """The path of the sample config `name` (with or without `.json`)."""
    path = CONFIG_DIR / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no sample config {name!r}; the samples are: {', '.join(sample_config_names())}")
    return path


def sample_description(name: str) -> str:
    """The comment lines at the top of the sample, joined: what it does and why."""
    comments = []
    for line in sample_config_path(name).read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip().startswith("//"):
            break
        comments.append(line.strip().removeprefix("//").strip())
    return " ".join(comments)
