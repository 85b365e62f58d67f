"""What the SDK checks before it uploads anything: a bad recipe or config raises `InvalidInput` at once,
with the JSON path and message the service would give, instead of a pydantic error or a 422 that only
comes after every upload. (Both checks are pydantic only: no torch.)"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from squeezer.client.errors import InvalidInput
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import check_top_level, load_config
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


def check_config(config: Any, *, need_compression: bool = True) -> dict[str, Any]:
    """A config (dict, `NNCFConfig`, JSON file with comments or a sample's name) as a validated dict, checked
    as the service will check it; `InvalidInput` naming the JSON path. `need_compression=False` for
    post-training jobs, whose config may only set the target device."""
    try:
        loaded = load_config(config)
        NNCFConfig.validate(loaded)
        check_top_level(loaded, need_compression=need_compression)
    except ConfigError as exc:
        body = {"path": exc.path, "problems": exc.problems}
        raise InvalidInput(422, "Invalid compression config", str(exc), body) from None
    return loaded
