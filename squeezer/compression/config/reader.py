"""The one way a config file becomes a dict, for the library, the SDK, the CLI and the API alike.

NNCF configs are JSON with `//` and `/* */` comments (NNCF's own samples carry them, and so do ours), so
every entry point reads them with the same comment-aware parser and fails with the same message. A
config may also be named by a sample's name (`int8_early_exit`, with or without `.json`).

`top_level_problems` finds the misspelling that would otherwise give an uncompressed model reported as
a success: unknown top-level keys are allowed (NNCF configs carry `model`, `batch_size`, ...), but one
that is a near miss of a known key, or a config with no `compression` section at all, is named.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import jstyleson

from squeezer.compression.config.models import CompressionConfigModel
from squeezer.compression.config.samples import sample_config_names, sample_config_path
from squeezer.errors import ConfigError

KNOWN_TOP_LEVEL = tuple(CompressionConfigModel.model_fields)
NEAR_MISS = 0.8  # difflib ratio: "compresion" (0.95) and "input_infos" (0.95) are misspellings; "model" is not


def parse_config(text: str | bytes, source: str = "the config") -> dict[str, Any]:
    """The JSON object in `text`, comments allowed; `ConfigError` naming `source`, the line and the column."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source} is not UTF-8 text: {exc}", path="$") from None
    try:
        data = jstyleson.loads(text)  # comments become blanks, so line and column stay the file's own
    except ValueError as exc:
        raise ConfigError(f"{source} is not JSON (comments are allowed): {exc}", path="$") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a compression config is a JSON object, got {type(data).__name__}", path="$")
    return data


def config_file(name_or_path: str | Path) -> Path:
    """A config file: an existing path, else the sample config of that name (`int8`, `int8.json`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == str(name_or_path) and path.stem in sample_config_names():
        return sample_config_path(path.stem)
    raise ConfigError(
        f"{name_or_path} is neither a file nor a sample config; the samples are: {', '.join(sample_config_names())}",
        path="$",
    )


def load_config(config: Any) -> dict[str, Any]:
    """A config given as a dict (or `NNCFConfig`), a JSON file, or a sample config's name, as a new dict."""
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, str | Path):
        raise ConfigError(f"a config is a dict, a JSON file or a sample name, got {type(config).__name__}", path="$")
    path = config_file(config)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", path="$") from None
    return parse_config(text, str(config))


def _nearest(key: str, candidates: tuple[str, ...]) -> str | None:
    match = difflib.get_close_matches(key.lower(), candidates, n=1, cutoff=NEAR_MISS)
    return match[0] if match else None


def top_level_problems(data: dict[str, Any], *, need_compression: bool = True) -> list[tuple[str, str]]:
    """(JSON path, message) for each top-level key that looks like a misspelt known key, and for a
    missing or empty `compression` section when one is needed (a training job without one compresses
    nothing, and would still succeed)."""
    problems = []
    absent = tuple(k for k in KNOWN_TOP_LEVEL if k not in data)
    for key in data:
        nearest = None if key in KNOWN_TOP_LEVEL else _nearest(key, absent)
        if nearest == "compression":
            problems.append((f"$.{key}", f"no 'compression' section; did you mean 'compression' (found {key!r})?"))
        elif nearest is not None:
            problems.append((f"$.{key}", f"unknown key {key!r}; did you mean {nearest!r}?"))
    misspelt = any("did you mean 'compression'" in message for _, message in problems)
    if need_compression and data.get("compression") in (None, []) and not misspelt:
        problems.append(("$.compression", "no 'compression' section: the model would not be compressed"))
    return problems


def check_top_level(data: dict[str, Any], *, need_compression: bool = True) -> None:
    """`ConfigError` for the first of `top_level_problems`, listing them all."""
    problems = top_level_problems(data, need_compression=need_compression)
    if problems:
        path, message = problems[0]
        raise ConfigError(message, path=path, problems=[f"{p}: {m}" for p, m in problems])
