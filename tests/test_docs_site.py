"""The documentation site stays true to the code: the generated references are current and complete,
every page the navigation names exists, and no page sends a reader to a file outside the repository.
Cheap checks only; `make docs` runs the strict build itself."""

from __future__ import annotations

import importlib.util
import json
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


def _bench_tables():
    spec = importlib.util.spec_from_file_location("docs_bench_tables", DOCS / "gen" / "bench_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["benchmarks.md", "reliability.md", "library.md"])
def test_bench_tables_and_figures_are_the_last_runs(page):
    bench = _bench_tables()
    assert page in bench.PAGES
    text = (DOCS / page).read_text(encoding="utf-8")
    assert bench.render(text) == text, f"docs/{page} quotes stale bench results: run `make docs` and commit it"


def test_every_bench_table_and_figure_is_on_a_page():
    bench = _bench_tables()
    tables, figures = [], []
    for page in bench.PAGES:
        marked_tables, marked_figures = bench.marked((DOCS / page).read_text(encoding="utf-8"))
        tables += marked_tables
        figures += marked_figures
    assert sorted(tables) == sorted(bench.TABLES), "each bench table is marked exactly once"
    assert set(figures) == set(bench.FIGURES)


# One figure per generated table, read from the JSON here (not through the renderer): a table that stops
# being generated from its file, or is rendered from another key, no longer shows it.
KEY_FIGURES = {
    "quantization": lambda: f"**{_results('quantization')['train_step_ratio']:.2f}x**",
    "runtime": lambda: (
        f"{_results('runtime')['models']['resnet18']['latency']['1']['onnxruntime']['speedup']['squeezer']:.2f}x"
    ),
    "transformers": lambda: f"{_results('transformers')['models']['bert_l2_h768']['parity']['sq_onnxruntime']:.3f}",
    "placement": lambda: f"**{_results('placement')['rows'][0]['onnxruntime']['speedup']['onnxruntime']:.2f}x**",
    "ptq_resnet18": lambda: f"{_results('ptq')['resnet18']['nncf']['error_torch']:.4f}",
    "ptq_zoo": lambda: f"{_results('ptq')['zoo']['squeezer']['hf_vit']['nncf_error_torch']:.4f}",
    "ptq_zoo_speed": lambda: (
        f"{_results('ptq')['zoo']['squeezer']['resnet18']['speed']['openvino']['speedup']['nncf']:.2f}x"
    ),
    "ptq_minilm": lambda: f"{_results('ptq')['minilm']['squeezer']['cosine_openvino_min']:.4f} OpenVINO",
    "ptq_accuracy_control": lambda: f"{_results('ptq')['digits_ac']['nncf']['ptq_accuracy']:.2f}%",
    "ptq_quality": lambda: f"{_results('ptq_quality')['models'][0]['ratio_8bit']:.2f}x",
    "algorithms_pruning": lambda: f"{_results('algorithms')['filter_pruning']['pruned_0.5']['params_ratio']:.3f}x",
    "search_candidates": lambda: f"{_results('search')['search']['candidates'][0]['speedup']:.2f}x",
    "search_summary": lambda: f"| epochs spent | {_results('search')['search']['epochs_spent']} |",
    "upload": lambda: f"{_results('upload')['during_upload']['p95_ms']:.1f} ms",
    "limits": lambda: f"{_results('limits')['median_s']['without']:.2f} s",
    "ui": lambda: f"| {_results('ui')['pages']['submit page']['ready_ms']:.0f} |",
    "service": lambda: f"{_results('service')['rows'][1]['runs'][0]['library_s']:.1f} s",
    "service_load": lambda: f"{_results('service')['rows'][0]['load']['polls_per_s']:.0f}",
    "load": lambda: f"{_results('load')['result']['polls']:,} status polls",
}


def test_each_bench_table_shows_its_results():
    bench = _bench_tables()
    assert set(KEY_FIGURES) == set(bench.TABLES), "give a new bench table its key figure here"
    pages = "".join((DOCS / page).read_text(encoding="utf-8") for page in bench.PAGES)
    for name, figure in KEY_FIGURES.items():
        block = re.search(re.escape(bench.begin(name)) + r"(.*?)<!-- end of bench table", pages, re.S)
        assert block, f"the bench table {name} is not marked on any page"
        assert figure() in block.group(1), f"the bench table {name} does not show {figure()!r} from its JSON"
