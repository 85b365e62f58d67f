"""Search requests against a real SQLite database: validation at submit, candidate jobs, cancel, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from squeezer.db import Job, JobStatus, Search
from squeezer.jobs import searches, transitions
from squeezer.search import DEFAULT_CANDIDATES
from tests.api.test_api import npz_bytes, pt2_bytes, upload
from tests.helpers import api_client


@pytest.fixture
def api(tmp_path):
    return api_client(tmp_path)


@pytest.fixture
def artifacts(api, tmp_path):
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    return model, data


def body(artifacts, **extra):
    model, data = artifacts
    return {
        "name": "find-it",
        "model": model["id"],
        "train_data": data["id"],
        "val_data": data["id"],
        "accuracy": {"maximal_absolute_accuracy_degradation": 1.0},
        **extra,
    }


def test_a_search_queues_one_job_per_candidate(api, artifacts):
    created = api.post(
        "/v1/searches", headers=api.alice, json=body(artifacts, budget={"max_total_epochs": 15}, batch_size=4)
    )
    assert created.status_code == 201, created.text
    search = created.json()
    assert search["status"] == "queued" and search["settings"]["objective"] == "latency"
    names = [c["name"] for c in search["result"]["candidates"]]
    assert names == list(DEFAULT_CANDIDATES)
    assert search["result"]["front"] == [] and search["result"]["recommended"] is None
    jobs = api.get("/v1/jobs", headers=api.alice).json()["items"]
    assert {j["id"] for j in jobs} == {job_id for job_id, _ in api.queued}  # each candidate job reached the queue
    assert {j["search_id"] for j in jobs} == {search["id"]} and {j["candidate"] for j in jobs} == set(names)
    with api.app.state.sessions() as session:
        for job in session.scalars(select(Job)):
            recipe = job.spec["recipe"]
            assert job.spec["latency_batch_size"] == 4
            if job.candidate.startswith("ptq"):  # post-training: no loop, no epochs, the budget as max_drop
                assert recipe["mode"] == "ptq" and job.total_epochs == 0
                assert "accuracy_aware_training" not in job.spec["config"]
                assert recipe["max_drop"] == (1.0 if job.candidate == "ptq_accuracy_control" else None)
                continue
            loop = job.spec["config"]["accuracy_aware_training"]
            assert loop["mode"] == ("adaptive_compression_level" if "adaptive" in job.candidate else "early_exit")
            assert loop["params"]["maximal_absolute_accuracy_degradation"] == 1.0
            # the epochs are shared among the candidates that train
            assert loop["params"]["maximal_total_epochs"] == 2 == 15 // (len(DEFAULT_CANDIDATES) - 2)
            assert job.total_epochs == 2 and recipe["mode"] == "train" and recipe["init"] == "ptq"
    assert api.get(f"/v1/searches/{search['id']}", headers=api.bob).status_code == 404  # another key's
    listed = api.get("/v1/searches", headers=api.alice).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == search["id"]


def test_bad_candidates_are_refused_at_submit_with_their_json_path(api, artifacts):
    unknown = api.post("/v1/searches", headers=api.alice, json=body(artifacts, candidates=["int8", "int9"]))
    assert unknown.status_code == 422 and unknown.json()["path"] == "$.candidates[1]"
    assert "int9" in unknown.json()["detail"] and "pruning50_int8" in unknown.json()["detail"]
    bad = {"name": "mine", "config": {"compression": {"algorithm": "quantization", "preset": "fastest"}}}
    invalid = api.post("/v1/searches", headers=api.alice, json=body(artifacts, candidates=["int8", bad]))
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["path"] == "$.candidates[1].config.compression.preset"
    assert "mine" in invalid.json()["detail"]
    wrong_input = {
        "name": "mine",
        "config": {"input_info": {"sample_size": [1, 3]}, "compression": {"algorithm": "quantization"}},
    }
    unfit = api.post("/v1/searches", headers=api.alice, json=body(artifacts, candidates=[wrong_input]))
    assert unfit.status_code == 422 and unfit.json()["path"] == "$.candidates[0].config.input_info.sample_size"
    no_budget = body(artifacts)
    no_budget["accuracy"] = {}
    assert api.post("/v1/searches", headers=api.alice, json=no_budget).status_code == 422
    assert api.get("/v1/jobs", headers=api.alice).json()["total"] == 0  # nothing stored or queued
    assert api.queued == []


def test_a_search_counts_its_candidates_against_the_job_quota(tmp_path, artifacts, api):
    api.app.state.settings.max_active_jobs_per_key = 5
    refused = api.post("/v1/searches", headers=api.alice, json=body(artifacts))  # the defaults: more than 5
    assert refused.status_code == 429 and f"{len(DEFAULT_CANDIDATES)} candidates" in refused.json()["detail"]
    assert api.post("/v1/searches", headers=api.alice, json=body(artifacts, candidates=["int8"])).status_code == 201


def test_cancel_stops_every_unfinished_candidate_and_keeps_finished_ones(api, artifacts):
    search = api.post(
        "/v1/searches", headers=api.alice, json=body(artifacts, candidates=["int8", "pruning30_int8", "int8_kd"])
    ).json()
    jobs = {c["name"]: c["job_id"] for c in search["result"]["candidates"]}
    with api.app.state.sessions() as session:  # int8 finished, pruning30_int8 is running on a worker
        assert transitions.claim(session, jobs["int8"], "w1")
        assert transitions.finish(session, jobs["int8"], "w1", JobStatus.succeeded, result={"metric": 90.0})
        assert transitions.claim(session, jobs["pruning30_int8"], "w2")
    cancelled = api.post(f"/v1/searches/{search['id']}/cancel", headers=api.alice).json()
    states = {c["name"]: c["status"] for c in cancelled["result"]["candidates"]}
    assert states == {"int8": "succeeded", "pruning30_int8": "cancelling", "int8_kd": "cancelled"}
    assert cancelled["status"] == "running"  # until the worker stops its candidate after the epoch
    assert api.delete(f"/v1/searches/{search['id']}", headers=api.alice).status_code == 409
    with api.app.state.sessions() as session:
        assert transitions.finish(session, jobs["pruning30_int8"], "w2", JobStatus.cancelled)
    done = api.get(f"/v1/searches/{search['id']}", headers=api.alice).json()
    assert done["status"] == "cancelled" and done["finished_at"] is not None
    assert api.post(f"/v1/searches/{search['id']}/cancel", headers=api.alice).status_code == 409
    assert api.delete(f"/v1/searches/{search['id']}", headers=api.alice).status_code == 204
    assert api.get(f"/v1/searches/{search['id']}", headers=api.alice).status_code == 404
    assert api.get("/v1/jobs", headers=api.alice).json()["total"] == 0  # its candidates went with it


def test_delete_refuses_a_running_search_without_cancelling_anything_and_takes_a_queued_one(api, artifacts):
    """As `DELETE /v1/jobs/{id}`: a queued candidate is cancelled and deleted, a running one makes it 409;
    a 409 leaves every candidate as it was (queued ones stay queued, to run)."""
    search = api.post("/v1/searches", headers=api.alice, json=body(artifacts, candidates=["int8", "int8_kd"])).json()
    jobs = {c["name"]: c["job_id"] for c in search["result"]["candidates"]}
    with api.app.state.sessions() as session:  # the second candidate: the first one is queued before it
        assert transitions.claim(session, jobs["int8_kd"], "w1")
    refused = api.delete(f"/v1/searches/{search['id']}", headers=api.alice)
    assert refused.status_code == 409 and "a candidate is running" in refused.json()["detail"]
    after = api.get(f"/v1/searches/{search['id']}", headers=api.alice).json()
    assert {c["name"]: c["status"] for c in after["result"]["candidates"]} == {"int8": "queued", "int8_kd": "running"}
    assert after["status"] == "running" and after["finished_at"] is None
    with api.app.state.sessions() as session:
        assert transitions.finish(session, jobs["int8_kd"], "w1", JobStatus.succeeded, result={"metric": 90.0})
    assert api.delete(f"/v1/searches/{search['id']}", headers=api.alice).status_code == 204  # int8 still queued
    assert api.get(f"/v1/searches/{search['id']}", headers=api.alice).status_code == 404
    assert api.get("/v1/jobs", headers=api.alice).json()["total"] == 0
    with api.app.state.sessions() as session:  # the queued candidate went too: no worker can claim it now
        assert not transitions.claim(session, jobs["int8"], "w2")


def record(session, job_id, owner, epoch, margin):
    values = dict.fromkeys(transitions.EPOCH_FIELDS, None)
    values.update(phase="fine-tune", stage="compressed", metric=90.0 + margin, accuracy_budget=margin, wall_time_s=1.0)
    assert transitions.record_epoch(session, job_id, owner, epoch, values)
    return searches.judge_epoch(session, job_id, epoch)


def test_halving_stops_low_ranked_candidates_below_budget_as_their_epochs_arrive(api, artifacts):
    names = ["int8", "int8_kd", "pruning30_int8", "pruning50_int8"]
    # grace 1: judged from epoch 1 on (the default grace of 2 epochs is tested in tests/search)
    search = api.post(
        "/v1/searches", headers=api.alice, json=body(artifacts, candidates=names, halving_grace_epochs=1)
    ).json()
    jobs = {c["name"]: c["job_id"] for c in search["result"]["candidates"]}
    with api.app.state.sessions() as session:
        for name in names:
            assert transitions.claim(session, jobs[name], name)
        assert record(session, jobs["int8"], "int8", 0, -9.0) is None  # epoch 0 is before training: no rung
        # epoch 1 is a rung; each candidate is judged against those that reported it before (asynchronous)
        assert record(session, jobs["int8"], "int8", 1, -5.0) is None  # alone at the rung
        assert record(session, jobs["int8_kd"], "int8_kd", 1, -1.0) is None  # best of 2
        assert record(session, jobs["pruning30_int8"], "pruning30_int8", 1, 0.5) is None  # within the budget
        reason = record(session, jobs["pruning50_int8"], "pruning50_int8", 1, -2.0)  # 3rd of 4: out
        assert reason is not None and "rank 3 of the 4 candidates" in reason
        assert record(session, jobs["int8"], "int8", 3, -4.0) is None  # epoch 3 is no rung (1, 2, 4, ...)
        assert transitions.finish(session, jobs["pruning50_int8"], "pruning50_int8", JobStatus.cancelled)
    state = api.get(f"/v1/searches/{search['id']}", headers=api.alice).json()
    outcomes = {c["name"]: c for c in state["result"]["candidates"]}
    assert outcomes["pruning50_int8"]["status"] == "stopped" and outcomes["pruning50_int8"]["stopped_reason"] == reason
    assert {n: o["status"] for n, o in outcomes.items() if n != "pruning50_int8"} == dict.fromkeys(
        ["int8", "int8_kd", "pruning30_int8"], "running"
    )


def test_past_the_wall_time_budget_no_candidate_starts_another_epoch(api, artifacts):
    search = api.post(
        "/v1/searches",
        headers=api.alice,
        json=body(artifacts, candidates=["int8", "int8_kd"], early_stopping=False, budget={"max_wall_time_s": 3600}),
    ).json()
    jobs = {c["name"]: c["job_id"] for c in search["result"]["candidates"]}
    with api.app.state.sessions() as session:
        assert transitions.claim(session, jobs["int8"], "w")
        assert record(session, jobs["int8"], "w", 1, -3.0) is None  # within the hour
        found = session.get(Search, search["id"])
        found.deadline_at = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()
        assert record(session, jobs["int8"], "w", 2, -3.0) == searches.DEADLINE_REASON
        assert session.get(Job, jobs["int8"]).status == JobStatus.cancelling  # stops after this epoch
        assert session.get(Job, jobs["int8_kd"]).status == JobStatus.cancelled  # never started
