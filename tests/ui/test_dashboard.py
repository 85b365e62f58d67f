"""The dashboard in a real headless Chromium against a real API and worker: signing in, submitting a job
and watching its charts grow epoch by epoch, downloading an export, cancelling, a config error shown with
its JSON path, and no data without the right key."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

MLP_CONFIG = '{"input_info": {"sample_size": [1, 64]}, "compression": {"algorithm": "quantization"}}'


def sign_in(page, base, secret, path="/ui/jobs"):
    page.goto(base + path)
    page.fill("#api-key", secret)
    page.click("#sign-in-form button")
    page.wait_for_selector("#page:not([hidden])")


def api(ui_service, name):
    return httpx.Client(base_url=ui_service.url, headers={"Authorization": f"Bearer {ui_service.keys[name]}"})


def fill_submit_form(page, job_files, name, config, epochs, batch_size=None):
    page.fill("#name", name)
    page.set_input_files("#model", str(job_files["model"]))
    page.set_input_files("#train", str(job_files["train"]))
    page.set_input_files("#val", str(job_files["val"]))
    page.fill("#config", config)
    page.fill("#epochs", str(epochs))
    if batch_size is not None:
        page.fill("#batch_size", str(batch_size))
    page.click("#submit")


def submit_by_api(client, job_files, name, epochs):
    ids = {}
    for field, kind in (("model", "model"), ("train", "dataset"), ("val", "dataset")):
        path = job_files[field]
        response = client.post("/v1/artifacts", data={"kind": kind}, files={"file": (path.name, path.read_bytes())})
        ids[field] = response.json()["id"]
    body = {
        "name": name,
        "model": ids["model"],
        "train_data": ids["train"],
        "val_data": ids["val"],
        "config": {"compression": {"algorithm": "quantization"}},
        "recipe": {"epochs": epochs, "batch_size": 16},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_without_the_right_key_the_sign_in_page_shows_and_no_data(ui_service, job_files, page):
    with api(ui_service, "alice") as alice:
        job_id = submit_by_api(alice, job_files, "alice-private", 1)
        alice.post(f"/v1/jobs/{job_id}/cancel")
    base = ui_service.url

    page.goto(f"{base}/ui/jobs/{job_id}")  # no key in this tab
    assert page.is_visible("#sign-in") and page.is_hidden("#page")

    page.fill("#api-key", "sq_not-a-real-key")
    page.click("#sign-in-form button")
    page.wait_for_function("() => document.querySelector('#sign-in-error').textContent.includes('refused')")
    assert page.is_hidden("#page")
    assert page.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    assert "alice-private" not in page.content()

    # bob's key is valid, and alice's job does not exist for it
    sign_in(page, base, ui_service.keys["bob"], f"/ui/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#job-error').textContent.includes('404')")
    assert "alice-private" not in page.inner_text("body")
    page.goto(f"{base}/ui/jobs")
    page.wait_for_selector("#jobs tbody tr")
    assert "alice-private" not in page.inner_text("#jobs")
    # the key lives in sessionStorage only: not in the URL, not in a cookie
    assert page.evaluate("sessionStorage.getItem('squeezer.apiKey')") == ui_service.keys["bob"]
    assert page.context.cookies() == [] and ui_service.keys["bob"] not in page.url

    # a key revoked or replaced under a signed-in tab sends it back to the sign-in page
    page.evaluate("sessionStorage.setItem('squeezer.apiKey', 'sq_revoked')")
    page.reload()
    page.wait_for_selector("#sign-in:not([hidden])")
    assert page.is_hidden("#page")


def test_a_key_revoked_under_a_signed_in_tab_gets_the_sign_in_page_on_the_next_navigation(ui_service, page):
    from squeezer.api.keys import create_key, revoke_key
    from squeezer.db import ApiKey

    with ui_service.app.state.sessions() as session:
        row, secret = create_key(session, "carol")
    sign_in(page, ui_service.url, secret, "/ui/jobs")
    page.wait_for_selector("#jobs")
    with ui_service.app.state.sessions() as session:  # as `squeezer keys revoke carol` does
        assert revoke_key(session, session.get(ApiKey, row.id))
    page.click("nav a[href='/ui/searches']")
    page.wait_for_selector("#sign-in:not([hidden])")
    assert page.is_hidden("#page") and page.evaluate("sessionStorage.length") == 0
    assert "The key was refused: unknown or revoked API key" in page.inner_text("#sign-in-error")


@pytest.mark.slow
def test_a_job_submitted_from_the_page_streams_its_epochs_and_its_onnx_downloads_intact(
    ui_service, job_files, page, tmp_path
):
    base = ui_service.url
    sign_in(page, base, ui_service.keys["alice"], "/ui/submit")
    page.wait_for_selector("#sample option[value='int8']", state="attached")
    # batches of 2: an epoch takes longer than the event stream's 0.5 s poll, so each epoch arrives on its
    # own (with 64, all four epochs of this MLP could land between two polls on an idle machine)
    fill_submit_form(page, job_files, "from-the-page", MLP_CONFIG, epochs=4, batch_size=2)
    page.wait_for_url(f"{base}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]

    seen = []  # the chart's point count, sampled while the job runs
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        points = int(page.get_attribute("#chart-metric", "data-points"))
        if not seen or seen[-1] != points:
            seen.append(points)
        if page.inner_text("#job-status") in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    with api(ui_service, "alice") as alice:
        job = alice.get(f"/v1/jobs/{job_id}").json()
        metrics = alice.get(f"/v1/jobs/{job_id}/metrics").json()
        exports = {e["kind"]: e for e in alice.get(f"/v1/jobs/{job_id}/artifacts").json()}
    assert job["status"] == "succeeded", job["error"]
    page.wait_for_function(f"() => document.querySelector('#chart-metric').dataset.points === '{len(metrics)}'")
    assert len(metrics) == 5  # epoch 0 (before training) and four trained epochs
    # the chart grew one epoch at a time while the job ran, not all at once at the end
    assert seen == sorted(seen) and len([n for n in seen if 0 < n < len(metrics)]) >= 2, seen

    chart = page.eval_on_selector(
        "#chart-metric", "el => ({data: el.chart.data, labels: el.chart.series.map(s => s.label)})"
    )
    assert chart["labels"][1:] == ["metric", "lowest tolerable"]
    assert chart["data"][0] == [m["epoch"] for m in metrics]
    assert chart["data"][1] == pytest.approx([m["metric"] for m in metrics])
    # the budget line: the lowest tolerable metric, the same at every epoch (FP32 metric minus the allowed drop)
    assert chart["data"][2] == pytest.approx([m["metric"] - m["accuracy_budget"] for m in metrics])
    loss = page.eval_on_selector("#chart-loss", "el => el.chart.data")
    assert loss[1][0] is None and loss[1][1:] == pytest.approx([m["loss"] for m in metrics[1:]])
    assert page.inner_text("#timeline")  # the stages the epochs went through

    page.wait_for_selector("#exports tr[data-kind='onnx']")
    assert page.inner_text("#exports tr[data-kind='onnx'] .sha256") == exports["onnx"]["sha256"]
    assert page.is_visible("#exports tr[data-kind='tensorboard']")
    with page.expect_download() as download_info:
        page.click("#exports button[data-kind='onnx']")
    saved = tmp_path / "downloaded.onnx"
    download_info.value.save_as(saved)
    assert download_info.value.suggested_filename == "model.onnx"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == exports["onnx"]["sha256"]
    assert page.is_visible("#result-card") and "onnxruntime" in page.inner_text("#latency")


@pytest.mark.slow
def test_a_running_job_is_cancelled_from_its_page(ui_service, job_files, page):
    with api(ui_service, "alice") as alice:
        job_id = submit_by_api(alice, job_files, "to-cancel", 200)
        sign_in(page, ui_service.url, ui_service.keys["alice"], f"/ui/jobs/{job_id}")
        page.wait_for_function(
            "() => Number(document.querySelector('#chart-metric').dataset.points) >= 1", timeout=120_000
        )
        page.click("#cancel")
        page.wait_for_function(
            "() => document.querySelector('#job-status').textContent === 'cancelled'", timeout=120_000
        )
        job = alice.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and job["epoch"] < 200
        assert page.is_hidden("#cancel") and page.is_visible("#delete")

        page.once("dialog", lambda dialog: dialog.accept())  # "Delete this job ...?"
        page.click("#delete")
        page.wait_for_url(f"{ui_service.url}/ui/jobs")
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_bad_config_shows_the_api_problem_with_its_json_path(ui_service, job_files, page):
    bad = '{"compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": -5}}}}'
    sign_in(page, ui_service.url, ui_service.keys["alice"], "/ui/submit")
    page.select_option("#sample", "int8")  # a sample config fills the editor, without its comments
    with api(ui_service, "alice") as alice:
        assert json.loads(page.input_value("#config")) == alice.get("/v1/sample-configs/int8").json()["config"]
    assert "INT8" in page.inner_text("#sample-description")
    fill_submit_form(page, job_files, "bad-config", bad, epochs=1)
    page.wait_for_selector("#problem:not([hidden])")
    assert page.inner_text("#problem-title").startswith("422 Invalid compression config")
    assert page.inner_text("#problem-path") == "$.compression.initializer.range.num_init_samples"
    assert "greater than or equal to 0" in page.inner_text("#problem-list")
    assert page.url.endswith("/ui/submit")  # nothing was submitted


def test_the_list_pages_and_filters_by_status(ui_service, page):
    from datetime import UTC, datetime, timedelta

    from squeezer.api.keys import create_key
    from squeezer.db import Job, JobStatus

    statuses = [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled]  # finished: nothing for the worker
    now = datetime.now(UTC)
    with ui_service.app.state.sessions() as session:
        key, secret = create_key(session, "carol")
        for i in range(55):
            session.add(
                Job(
                    owner_id=key.id,
                    name=f"carol-{i:02d}",
                    status=statuses[i % 3],
                    spec={},
                    epoch=3,
                    total_epochs=5,
                    best_metric=90.0 + i / 100,
                    compression_rate=0.25,
                    created_at=now - timedelta(minutes=i),
                    finished_at=now,
                )
            )
        session.commit()
    sign_in(page, ui_service.url, secret)
    page.wait_for_selector("#jobs tbody tr[data-job-id]")
    names = page.locator("#jobs tbody tr td:first-child").all_inner_texts()
    assert names == [f"carol-{i:02d}" for i in range(50)]  # newest first, 50 a page
    assert page.inner_text("#range") == "1–50 of 55" and page.is_disabled("#prev")
    first = page.locator("#jobs tbody tr").first.inner_text()
    # finished after 3 of at most 5 epochs: not "3/5", which read as stalled
    assert "succeeded" in first and "3 (of ≤5)" in first and "90.00" in first and "25.0 %" in first

    page.click("#next")
    page.wait_for_function("() => document.querySelector('#range').textContent === '51–55 of 55'")
    assert page.locator("#jobs tbody tr").count() == 5 and page.is_disabled("#next")
    assert page.url.endswith("?offset=50")  # the view can be linked and reloaded

    page.select_option("#status-filter", "failed")
    page.wait_for_function("() => document.querySelector('#range').textContent === '1–18 of 18'")
    statuses_shown = set(page.locator("#jobs tbody td:nth-child(2)").all_inner_texts())
    assert statuses_shown == {"failed"} and page.url.endswith("?status=failed")


@pytest.mark.slow
def test_a_post_training_job_is_submitted_from_the_page_without_validation_data(ui_service, job_files, page, tmp_path):
    import numpy as np

    with np.load(job_files["train"]) as train:
        np.savez(tmp_path / "calibration.npz", x=train["x"][:128])  # no labels
    sign_in(page, ui_service.url, ui_service.keys["alice"], "/ui/submit")
    assert page.is_hidden("#max_drop")
    page.select_option("#mode", "ptq")
    assert page.is_visible("#max_drop") and page.is_visible("#val-optional")
    page.fill("#name", "ptq-from-page")
    page.set_input_files("#model", str(job_files["model"]))
    page.set_input_files("#train", str(tmp_path / "calibration.npz"))
    page.fill("#config", "{}")
    page.click("#submit")
    page.wait_for_url(f"{ui_service.url}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    with api(ui_service, "alice") as alice:
        spec = alice.get(f"/v1/jobs/{job_id}/spec").json()
        assert spec["recipe"]["mode"] == "ptq" and spec.get("val_data") is None
        deadline = time.monotonic() + 120
        while (job := alice.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert job["status"] == "succeeded", job
    page.wait_for_function("() => document.querySelector('#job-status').textContent === 'succeeded'")


def test_the_job_page_labels_small_learning_rates_mentions_the_key_file_and_fetches_nothing_missing(ui_service, page):
    """Cosmetics a new user reported: the lr axis read "0 0 0 0 0" at 1e-4, a job done at once read "0/3",
    the sign-in page did not say where `serve` writes the key, and the console showed a 404 (the favicon)."""
    from datetime import UTC, datetime

    from squeezer.api.keys import create_key
    from squeezer.db import Job, JobMetric, JobStatus

    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(ui_service.url + "/ui/jobs")
    assert ".squeezer/api_key" in page.inner_text("#sign-in")
    with ui_service.app.state.sessions() as session:
        key, secret = create_key(session, "dave")
        spec = {"model": "m", "train_data": "t", "val_data": "v", "config": {}, "recipe": {"lr": 1e-4}}
        job = Job(owner_id=key.id, name="small-lr", status=JobStatus.succeeded, spec=spec, epoch=2, total_epochs=3)
        job.finished_at = datetime.now(UTC)
        session.add(job)
        session.flush()
        for epoch in range(3):
            lr, loss = (None, None) if epoch == 0 else (1e-4 / epoch, 0.3 / epoch)
            session.add(
                JobMetric(
                    job_id=job.id,
                    epoch=epoch,
                    phase="initial",
                    stage="FULLY_COMPRESSED",
                    metric=90.0,
                    accuracy_budget=0.5,
                    loss=loss,
                    lr=lr,
                    wall_time_s=1.0,
                )
            )
        session.commit()
        job_id = job.id
    sign_in(page, ui_service.url, secret, f"/ui/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#chart-loss').dataset.points === '3'")
    labels = page.eval_on_selector(
        "#chart-loss", "el => el.chart.axes[2].values(el.chart, [0.00005, 0.00007500000001, 0.0001], 2, 0.000025)"
    )
    assert labels == ["0.00005", "0.000075", "0.0001"]  # not "0"
    assert "done after 2 of at most 3 epochs" in page.inner_text("#job-facts")
    assert missing == [], missing
