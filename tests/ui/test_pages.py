"""The dashboard's pages without a browser: served without a key and without data, under a strict CSP,
with every asset from the package itself (no CDN) and every file shipped in the wheel."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from squeezer.api.ui.pages import HERE, PAGES
from tests.helpers import api_client

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(tmp_path):
    return api_client(tmp_path)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.path)
def test_each_page_is_a_shell_without_data_under_a_strict_policy(api, page):
    response = api.get("/ui" + page.path.format(job_id="0123abcd", search_id="4567ef01"))  # no key: the shell is public
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert 'id="sign-in"' in html and 'id="page" hidden' in html
    assert "<script>" not in html  # no inline script: the policy would refuse it
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        # nothing from another origin: the dashboard works offline (the empty favicon is inline: data:,)
        assert asset.startswith("/ui") or asset == "data:,", asset
        if asset.startswith("/ui/static/"):
            assert api.get(asset).status_code == 200, asset
    assert f"/ui/static/{page.script}" in html


def test_ui_redirects_to_the_first_page(api):
    response = api.get("/ui", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui" + PAGES[0].path


def test_a_job_id_in_the_path_reaches_the_page_escaped(api):
    html = api.get('/ui/jobs/a"b<c>').text
    assert 'data-job-id="a&#34;b&lt;c&gt;"' in html


def test_every_dashboard_file_is_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "squeezer.api.ui"
    ]
    files = [p.relative_to(HERE).as_posix() for p in HERE.rglob("*") if p.is_file() and p.suffix != ".pyc"]
    data = [f for f in files if not f.endswith(".py")]
    assert "static/vendor/uPlot.iife.min.js" in data and "templates/base.html" in data
    shipped = {p.relative_to(HERE).as_posix() for pattern in patterns for p in HERE.glob(pattern)}  # setuptools' globs
    missing = sorted(set(data) - shipped)
    assert missing == [], f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"
