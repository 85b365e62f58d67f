"""`NNCFConfig`: the user's JSON (a dict, as in NNCF) plus its typed, validated view."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from squeezer.compression.config.models import CompressionConfigModel
from squeezer.compression.config.reader import load_config
from squeezer.errors import ConfigError


def _json_path(data: Any, loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a JSON path of the user's document.

    Pydantic locations also contain union tags (e.g. the algorithm name of a discriminated union)
    that are not keys of the document; walking the document alongside skips them. A section given
    as a single object is addressed as such, even though the model stores it as a list.
    """
    path = "$"
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path += f".{part}"
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path += f"[{part}]"
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, int) and part == 0:
            continue  # a single object where a list is allowed
        elif isinstance(part, str) and not isinstance(node, dict | list) and part not in ("list", "dict"):
            continue
    return path


def _describe(error: Any, data: Any) -> tuple[str, str]:
    path = _json_path(data, tuple(error["loc"]))
    ctx = error.get("ctx") or {}
    if error["type"] == "unknown_key":
        return f"{path}.{ctx['key']}", error["msg"]
    if error["type"] == "missing":
        return f"{path}.{error['loc'][-1]}", "required key is missing"
    if error["type"] == "union_tag_invalid":
        key = str(ctx["discriminator"]).strip("'")
        return f"{path}.{key}", f"unknown {key} {ctx['tag']!r}; allowed: {ctx['expected_tags']}"
    message = error["msg"]
    if error["type"] not in ("missing",) and "input" in error and not isinstance(error["input"], dict):
        message = f"{message} (got {json.dumps(error['input'], default=str)})"
    return path, message


class NNCFConfig(dict[str, Any]):
    """Dict of the parsed JSON, as NNCF's, plus `.model`, the validated typed view.

    Constructing it directly (like a dict) does not validate; `from_json` / `from_dict` do.
    Non-JSON objects (data loaders, criteria) live in a separate registry of "extra structs".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extra_structs: dict[str, Any] = {}
        self._model: CompressionConfigModel | None = None
        self._validated_text: str | None = None

    # -------------------------------------------------------------------------------- construction
    @classmethod
    def from_json(cls, path: str | Path) -> NNCFConfig:
        """Read a JSON file (comments allowed), or a sample config by name (`"int8_early_exit"`)."""
        return cls.from_dict(load_config(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NNCFConfig:
        model = cls.validate(data)
        config = cls(copy.deepcopy(data))
        config._model = model
        config._validated_text = json.dumps(data, sort_keys=True)
        return config

    @staticmethod
    def validate(data: Any) -> CompressionConfigModel:
        """Parse `data`; raise `ConfigError` listing every problem with its JSON path."""
        if not isinstance(data, dict):
            raise ConfigError(f"the config must be a JSON object, got {type(data).__name__}")
        try:
            # JSON mode + strict: "10" is not a number and 1 is not a boolean, as in JSON schema.
            text = json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the config must be JSON-serializable: {exc}") from exc
        try:
            return CompressionConfigModel.model_validate_json(text, strict=True)
        except ValidationError as exc:
            described = [_describe(e, data) for e in exc.errors()]
            problems = [f"{path}: {msg}" for path, msg in described[:10]]
            raise ConfigError(described[0][1], path=described[0][0], problems=problems) from None

    @staticmethod
    def schema() -> dict[str, Any]:
        return CompressionConfigModel.model_json_schema()

    @property
    def model(self) -> CompressionConfigModel:
        """The typed view of the current contents (users edit configs as dicts, e.g. `log_dir`)."""
        text = json.dumps(self, sort_keys=True, default=str)
        if self._model is None or text != self._validated_text:
            self._model = self.validate(dict(self))
            self._validated_text = text
        return self._model

    # -------------------------------------------------------------------------------- extra structs
    def register_extra_structs(self, structs: list[Any]) -> None:
        for struct in structs:
            struct_id = struct.get_id()
            if struct_id in self._extra_structs:
                raise ConfigError(f"{struct_id} is already registered as extra struct in the config")
            self._extra_structs[struct_id] = struct

    def get_extra_struct(self, struct_cls: type) -> Any:
        return self._extra_structs[struct_cls.get_id()]  # type: ignore[attr-defined]

    def has_extra_struct(self, struct_cls: type) -> bool:
        return struct_cls.get_id() in self._extra_structs  # type: ignore[attr-defined]

    def get_all_extra_structs(self) -> list[Any]:
        return list(self._extra_structs.values())

    def __deepcopy__(self, memo: dict[int, Any]) -> NNCFConfig:
        clone = NNCFConfig(copy.deepcopy(dict(self), memo))
        clone._extra_structs = dict(self._extra_structs)  # loaders are shared, not copied
        clone._model = self._model
        clone._validated_text = self._validated_text
        return clone


SqueezerConfig = NNCFConfig
