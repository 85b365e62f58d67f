"""One service (API + worker on the embedded defaults) and one Chromium for the dashboard's tests."""

from __future__ import annotations

import pytest

from tests.helpers import write_digits_job_files
from tests.ui.browser import chromium, service


@pytest.fixture(scope="module")
def ui_service(tmp_path_factory):
    with service(tmp_path_factory.mktemp("ui-home")) as running:
        yield running


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    """A digits MLP as .pt2 and digits train/val .npz files."""
    return write_digits_job_files(tmp_path_factory.mktemp("ui-files"))


@pytest.fixture(scope="module")
def browser():
    try:
        with chromium() as running:
            yield running
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
