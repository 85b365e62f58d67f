"""The project's sample NNCF configs (`squeezer/compression/config/samples`), read-only: the dashboard's submit page
offers them as starting points. They need no key: they are files shipped with the package, the same for
every caller, so a key would guard nothing (and a new user can read them before having one)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from squeezer.api.errors import ApiError, problems
from squeezer.compression.config.reader import parse_config
from squeezer.compression.config.samples import sample_config_names, sample_config_path, sample_description

router = APIRouter(prefix="/v1/sample-configs", tags=["sample configs"])


class SampleConfig(BaseModel):
    name: str  # what GET /v1/sample-configs/{name} takes (the file's name is accepted too)
    file: str  # its file in squeezer/compression/config/samples (`int8.json`), as the docs name it
    description: str  # the comment lines at the top of the file
    config: dict[str, Any]  # the JSON, without its // comments


def _read(name: str) -> SampleConfig:
    path = sample_config_path(name)
    config = parse_config(path.read_bytes(), path.name)  # the reader every config goes through
    return SampleConfig(name=name, file=path.name, description=sample_description(name), config=config)


@router.get("", response_model=list[SampleConfig], operation_id="sample_configs_list")
def list_sample_configs() -> list[SampleConfig]:
    return [_read(name) for name in sample_config_names()]


@router.get("/{name}", response_model=SampleConfig, operation_id="sample_configs_get", responses=problems(404))
def get_sample_config(name: str) -> SampleConfig:
    """`name` as listed (`int8_early_exit`) or as the file (`int8_early_exit.json`)."""
    name = name.removesuffix(".json")
    if name not in sample_config_names():
        raise ApiError(404, "Not found", f"no sample config {name!r}; the samples are {sample_config_names()}")
    return _read(name)
