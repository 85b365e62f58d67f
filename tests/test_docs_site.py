"""The documentation site stays true to the code: the generated references are current and complete,
every page the navigation names exists, and no page sends a reader to a file outside the repository.
Cheap checks only; `make docs` runs the strict build itself."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from squeezer.api.app import openapi_document
from squeezer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "gen" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["http-api.md", "settings.md"])
def test_committed_reference_pages_are_current(page):
    rendered = _generator().PAGES[page]()
    assert (DOCS / "reference" / page).read_text(encoding="utf-8") == rendered, (
        f"docs/reference/{page} is stale: run `make docs` and commit it"
    )


def test_http_api_page_lists_every_operation():
    text = (DOCS / "reference" / "http-api.md").read_text(encoding="utf-8")
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert f"`{operation['operationId']}` | {method.upper()} | `{path}`" in text
            assert f"## `{operation['operationId']}`" in text


def test_settings_page_lists_every_setting():
    text = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`SQUEEZER_{name.upper()}`" in text


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return [p for item in nav for p in _nav_pages(item)]


def test_every_page_is_in_the_navigation_and_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert nav == pages


def test_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert links
    for link in links:
        assert (ROOT / link).exists(), link


def test_the_sdk_example_is_the_same_in_the_readme_and_the_service_guide():
    def example(text: str) -> str:
        section = text[text.index("From Python (`squeezer.client`)") :]
        return re.search(r"```python\n(.*?)```", section, re.S).group(1)

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert example(readme) == example((DOCS / "service.md").read_text(encoding="utf-8"))


def test_no_page_or_docstring_cites_a_file_outside_the_repository():
    outside = re.compile(r"\.\./shared|\bspec/|\bspec §|accuracy_aware\.md|DESIGN\.md|algorithms\.md|config\.md §")
    for path in [ROOT / "README.md", *DOCS.rglob("*.md"), *(ROOT / "squeezer").rglob("*.py")]:
        assert not outside.search(path.read_text(encoding="utf-8")), path


def test_zoo_table_is_the_last_zoo_run():
    page = (DOCS / "zoo.md").read_text(encoding="utf-8")
    assert _generator().with_zoo_table(page) == page, "docs/zoo.md's table is stale: run `make docs` and commit it"
