"""The pages that share the origin of the key in `sessionStorage` (/docs and the dashboard), in a real
Chromium under their Content-Security-Policy: they work without a single violation, and a script injected
into them does not run."""

from __future__ import annotations

import httpx
import pytest

from tests.ui.browser import service

# before any page script, in every frame: every violation the browser reports goes into a list
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""
INJECT = """() => {
    const script = document.createElement("script");
    script.textContent = "window.__injected = 'inline script';";
    document.body.appendChild(script);
    const img = document.createElement("img");
    img.setAttribute("onerror", "window.__injected = 'event handler';");
    img.src = "/no-such-image.png";
    document.body.appendChild(img);
}"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with service(tmp_path_factory.mktemp("policies-home"), key_names=("alice",), worker=False) as running:
        yield running


@pytest.fixture
def watched(page):
    """The page, and the console's messages about the policy."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(WATCH)
    return page, refused


def injection_is_blocked(page):
    page.evaluate(INJECT)
    page.wait_for_function("() => window.__violations.length >= 2")
    assert page.evaluate("window.__injected") is None
    directives = page.evaluate("window.__violations")
    assert any(d.startswith("script-src") for d in directives) and any(d == "script-src-attr" for d in directives)


def open_docs(page, url):
    """/docs once Swagger UI has read the document (it fetched /openapi.json) and drawn what it made of it:
    the operations, or a message about the document (its version, or errors)."""
    with page.expect_response(f"{url}/openapi.json") as document:
        response = page.goto(f"{url}/docs")
    assert document.value.status == 200
    page.wait_for_function("() => document.querySelector('.opblock, .version-pragma, .errors-wrapper') !== null")
    return response


def test_docs_run_swagger_ui_under_the_policy_and_refuse_an_injected_script(api, watched):
    page, refused = watched
    policy = open_docs(page, api.url).headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy and "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy and "base-uri 'none'" in policy and "object-src 'none'" in policy
    assert page.evaluate("window.__violations") == [] and refused == []
    injection_is_blocked(page)


def test_docs_render_every_operation(api, watched):
    """swagger-ui-bundle 1.1.0 (Swagger UI 4.15.5) showed only 'Unable to render this definition' for
    FastAPI's OpenAPI 3.1; Swagger UI 5 (swagger-ui-py) renders every operation, under the same policy."""
    page, refused = watched
    operations = sum(len(ops) for ops in httpx.get(f"{api.url}/openapi.json").json()["paths"].values())
    open_docs(page, api.url)
    page.wait_for_function(f"() => document.querySelectorAll('.opblock').length === {operations}")
    assert "Unable to render" not in page.inner_text("body")
    assert page.evaluate("window.__violations") == [] and refused == []


def test_the_dashboard_works_under_its_policy_and_refuses_an_injected_script(api, watched):
    page, refused = watched
    page.goto(f"{api.url}/ui/jobs")
    page.fill("#api-key", api.keys["alice"])
    page.click("#sign-in-form button")
    page.wait_for_selector("#page:not([hidden])")
    page.goto(f"{api.url}/ui/submit")
    page.wait_for_selector("#sample option[value='int8']", state="attached")  # its script read the API
    assert page.evaluate("window.__violations") == [] and refused == []
    injection_is_blocked(page)
