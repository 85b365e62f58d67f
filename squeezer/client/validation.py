"""What the SDK checks before it uploads anything: a bad recipe or config raises `InvalidInput` at once,
with the JSON path and message the service would give, instead of a pydantic error or a 422 that only
comes after every upload. (Both checks are pydantic only: no torch.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from squeezer.client.errors import InvalidInput
from squeezer.client.packaging import config_dict
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.errors import ConfigError
from squeezer.recipe import Recipe


def check_recipe(recipe: Recipe | dict[str, Any] | None) -> Recipe:
    """The recipe as the service will read it; `InvalidInput` naming `$.recipe.<field>` and what is allowed."""
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return Recipe.model_validate(recipe or {})
    except ValidationError as exc:
        errors = [{"path": "$.recipe" + "".join(f".{p}" for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        raise InvalidInput(422, "Invalid recipe", detail, {"path": errors[0]["path"], "errors": errors}) from None


def check_config(config: Any) -> dict[str, Any]:
    """A config (dict, `NNCFConfig` or JSON file) as a validated dict; `InvalidInput` naming the JSON path."""
    try:
        loaded = config_dict(config)
    except (OSError, ValueError) as exc:  # no such file, not JSON, not an object
        source = str(config) if isinstance(config, (str, Path)) else type(config).__name__
        raise InvalidInput(422, "Invalid compression config", f"{source}: {exc}", {"path": "$"}) from None
    try:
        NNCFConfig.validate(loaded)
    except ConfigError as exc:
        body = {"path": exc.path, "problems": exc.problems}
        raise InvalidInput(422, "Invalid compression config", str(exc), body) from None
    return loaded
