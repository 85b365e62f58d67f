"""The search pages in a real headless Chromium against a real API and worker: a three-candidate search
on a digits MLP watched live (the candidates table gains statuses, the scatter plots one point per
finished candidate with the front and the recommendation as the API reports them), a candidate's link
to its job page, the search list, cancelling from the page, and no data without the right key."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.helpers import write_digits_job_files
from tests.ui.browser import sparse_int8, submit_search

CANDIDATES = ["int8", "int8_sparsity50", {"name": "sparse80_int8", "config": sparse_int8(0.8)}]
FINISHED = {"succeeded", "failed", "cancelled", "stopped"}


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """A digits MLP fitted to the training part (so its metric is a real accuracy), as .pt2 and .npz."""
    return write_digits_job_files(tmp_path_factory.mktemp("search-files"), trained=True)


def client(ui_service, name):
    return httpx.Client(base_url=ui_service.url, headers={"Authorization": f"Bearer {ui_service.keys[name]}"})


def sign_in(page, base, secret, path):
    page.goto(base + path)
    page.fill("#api-key", secret)
    page.click("#sign-in-form button")
    page.wait_for_selector("#page:not([hidden])")


def candidate_statuses(page):
    return tuple(page.locator("#candidates tbody td:nth-child(2)").all_inner_texts())


@pytest.mark.slow
def test_a_search_streams_its_candidates_and_plots_its_pareto_front(ui_service, trained_files, page):
    with client(ui_service, "alice") as alice:
        # objective size: on this MLP INT8 is not faster than FP32, so a latency search keeps FP32
        search = submit_search(alice, trained_files, "digits-search", CANDIDATES, epochs=1, objective="size")
        base = ui_service.url
        sign_in(page, base, ui_service.keys["alice"], f"/ui/searches/{search['id']}")
        assert page.locator("#candidates tbody tr").count() == 3

        seen = []  # the table's statuses, sampled while the search runs
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            statuses = candidate_statuses(page)
            if not seen or seen[-1] != statuses:
                seen.append(statuses)
            if page.inner_text("#search-status") not in ("queued", "running"):
                break
            time.sleep(0.1)
        done = alice.get(f"/v1/searches/{search['id']}").json()
    result = done["result"]
    assert done["status"] == "succeeded", result
    # the table changed as candidates ran, before showing every one finished
    assert len(seen) >= 3 and set(seen[0]) & {"queued", "running"}, seen
    assert any("running" in s for s in seen), seen
    page.wait_for_function("() => document.querySelector('#search-status').textContent === 'succeeded'")
    assert candidate_statuses(page) == tuple(c["status"] for c in result["candidates"])
    assert all(status in FINISHED for status in candidate_statuses(page))

    # the scatter: one point per finished candidate at (latency, metric), sorted by latency as uPlot needs
    measured = sorted(
        (c for c in result["candidates"] if c["status"] == "succeeded"), key=lambda c: (c["latency_ms"], c["name"])
    )
    assert len(measured) == 3 and result["front"] and result["recommended"] in result["front"]
    page.wait_for_function("() => document.querySelector('#scatter').dataset.points === '3'")
    plotted = page.eval_on_selector("#scatter", "el => ({data: el.chart.data, extra: el.plotted})")
    data, extra = plotted["data"], plotted["extra"]
    assert data[0] == pytest.approx([c["latency_ms"] for c in measured])
    assert data[1] == pytest.approx([c["metric"] for c in measured])
    # the front series holds exactly the front's candidates, the recommended series the recommendation
    assert [c["name"] for c, v in zip(measured, data[2], strict=True) if v is not None] == [
        c["name"] for c in measured if c["name"] in result["front"]
    ]
    assert [c["name"] for c, v in zip(measured, data[3], strict=True) if v is not None] == [result["recommended"]]
    assert extra["floor"] == pytest.approx(result["metric_floor"])
    assert extra["front"] == result["front"] and extra["recommended"] == result["recommended"]
    labels = page.eval_on_selector("#scatter", "el => el.chart.series.map(s => s.label)")
    assert labels[1:] == ["candidate", "Pareto front", "recommended"]

    # the table's numbers are the API's
    best = result["recommended"]
    row = page.locator(f"#candidates tr[data-candidate='{best}']")
    outcome = next(c for c in result["candidates"] if c["name"] == best)
    cells = row.locator("td").all_inner_texts()
    assert float(cells[5]) == pytest.approx(outcome["latency_ms"], rel=1e-2)  # three significant digits
    assert f"{outcome['fp32_latency_ms'] / outcome['latency_ms']:.2f}×" == cells[6]
    assert "recommended" in cells[0] and "front" in cells[0] and cells[4] == "yes"
    assert row.locator("td:nth-child(8)").get_attribute("data-bytes") == str(outcome["size_bytes"])
    assert page.is_hidden("#cancel") and page.is_visible("#delete")

    # a candidate's name opens its job page
    row.locator("a").click()
    page.wait_for_url(f"{base}/ui/jobs/{outcome['job_id']}")
    page.wait_for_function(f"() => document.querySelector('#job-name').textContent === 'digits-search/{best}'")

    # the list shows the search with its candidates and recommendation, and links to it
    page.goto(f"{base}/ui/searches")
    listed = page.locator(f"#searches tr[data-search-id='{search['id']}']")
    listed.wait_for()
    cells = listed.locator("td").all_inner_texts()
    assert cells[:5] == ["digits-search", "succeeded", "3", "3", best]
    listed.locator("a").click()
    page.wait_for_url(f"{base}/ui/searches/{search['id']}")
    page.wait_for_function("() => document.querySelector('#scatter').dataset.points === '3'")


@pytest.mark.slow
def test_a_search_is_cancelled_from_its_page_and_hidden_from_other_keys(ui_service, trained_files, page):
    with client(ui_service, "alice") as alice:
        # no drop allowed and 95 % of the weights zeroed: no candidate ends early within the budget
        candidates = [{"name": "sparse95_int8", "config": sparse_int8(0.95)}, "int8_sparsity50"]
        no_drop = {"maximal_absolute_accuracy_degradation": 0.0}
        search = submit_search(alice, trained_files, "to-cancel", candidates, epochs=200, accuracy=no_drop)
        base = ui_service.url

        # a refused key: the sign-in page, nothing of the search
        page.goto(f"{base}/ui/searches/{search['id']}")
        assert page.is_visible("#sign-in") and page.is_hidden("#page")
        page.fill("#api-key", "sq_not-a-real-key")
        page.click("#sign-in-form button")
        page.wait_for_function("() => document.querySelector('#sign-in-error').textContent.includes('refused')")
        assert page.is_hidden("#page") and "to-cancel" not in page.content()
        # another key: the search does not exist for it, and it is not in its list
        sign_in(page, base, ui_service.keys["bob"], f"/ui/searches/{search['id']}")
        page.wait_for_function("() => document.querySelector('#search-error').textContent.includes('404')")
        assert "to-cancel" not in page.inner_text("body")
        page.goto(f"{base}/ui/searches")
        page.wait_for_selector("#searches tbody tr")
        assert "to-cancel" not in page.inner_text("#searches")

        page.evaluate(f"sessionStorage.setItem('squeezer.apiKey', '{ui_service.keys['alice']}')")
        page.goto(f"{base}/ui/searches/{search['id']}")
        page.wait_for_selector("#cancel:not([hidden])")
        page.click("#cancel")
        page.wait_for_function(
            "() => document.querySelector('#search-status').textContent === 'cancelled'", timeout=120_000
        )
        done = alice.get(f"/v1/searches/{search['id']}").json()
        assert done["status"] == "cancelled"
        assert all(c["status"] == "cancelled" and c["epochs"] < 200 for c in done["result"]["candidates"])
        assert candidate_statuses(page) == ("cancelled", "cancelled") and page.is_hidden("#cancel")
        assert page.get_attribute("#scatter", "data-points") == "0"  # nothing finished, nothing plotted

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#delete")
        page.wait_for_url(f"{base}/ui/searches")
        assert alice.get(f"/v1/searches/{search['id']}").status_code == 404


@pytest.mark.slow
def test_a_search_started_from_the_submit_page_with_the_config_as_a_candidate(ui_service, trained_files, page):
    base = ui_service.url
    sign_in(page, base, ui_service.keys["alice"], "/ui/submit")
    page.fill("#name", "from-the-form")
    for field in ("model", "train", "val"):
        page.set_input_files(f"#{field}", str(trained_files[field]))
    assert page.is_hidden("#search-fields")
    page.check("#as-search")
    assert page.locator("#search-candidates input:checked").count() >= 2  # the default candidates
    for box in page.locator("#search-candidates input").all():
        box.uncheck()
    page.check("#search-candidates input[value='int8']")
    page.check("#search-own")
    page.fill("#search-own-name", "mine")
    page.fill("#search-drop", "2.5")
    page.select_option("#search-objective", "size")
    page.fill("#search-epochs", "4")
    page.fill("#epochs", "50")

    # the config as a candidate is checked as the API checks a search's: the problem names its path
    bad = '{"compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": -5}}}}'
    page.fill("#config", bad)
    page.click("#submit")
    page.wait_for_selector("#problem:not([hidden])")
    assert page.inner_text("#problem-title").startswith("422 Invalid compression config")
    assert page.inner_text("#problem-path") == "$.candidates[1].config.compression.initializer.range.num_init_samples"
    assert page.url.endswith("/ui/submit")

    own = {"compression": {"algorithm": "quantization", "preset": "mixed"}}
    page.fill("#config", json.dumps(own))
    page.click("#submit")
    page.wait_for_url(f"{base}/ui/searches/*")
    search_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#candidates tbody tr")
    assert page.locator("#candidates tbody tr").evaluate_all("rows => rows.map(r => r.dataset.candidate)") == [
        "int8",
        "mine",
    ]
    with client(ui_service, "alice") as alice:
        search = alice.get(f"/v1/searches/{search_id}").json()
        settings = search["settings"]
        assert search["name"] == "from-the-form" and settings["objective"] == "size"
        assert settings["accuracy"]["maximal_absolute_accuracy_degradation"] == 2.5
        assert settings["budget"]["max_total_epochs"] == 4
        assert settings["candidates"] == ["int8", {"name": "mine", "config": own}]
        jobs = [alice.get(f"/v1/jobs/{c['job_id']}").json() for c in search["result"]["candidates"]]
        assert [job["total_epochs"] for job in jobs] == [2, 2]  # the epoch budget split between two candidates
        if search["status"] in ("queued", "running"):
            alice.post(f"/v1/searches/{search_id}/cancel")
