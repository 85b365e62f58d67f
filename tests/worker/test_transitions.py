"""The job state machine under races, on SQLite and on PostgreSQL. Each race is interleaved on purpose:
`just_before` runs the competing transition, from another connection, at the moment the first one
sends a chosen statement; every other order follows from the statements' order. Whatever the order,
one of the two wins and the other changes nothing."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from squeezer.api.keys import create_key
from squeezer.db import ApiKey, Job, JobMetric, JobStatus, Search, make_engine, make_session_factory
from squeezer.db.migrate import upgrade
from squeezer.jobs import transitions
from squeezer.jobs.transitions import recover_stale_jobs
from tests.helpers import app_with_two_keys

RECORD = {
    "phase": "training",
    "stage": "fully_compressed",
    "metric": 90.0,
    "accuracy_budget": 1.0,
    "compression_rate": 0.5,
    "compression_rate_target": None,
    "loss": 0.3,
    "lr": 1e-3,
    "wall_time_s": 1.0,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"transitions_{tmp_path.name}"[:60])
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@contextlib.contextmanager
def just_before(sessions, sql_start, action):
    """Run `action(session)` on another connection once, just before the next statement that starts
    with `sql_start` goes to the database; yields a list that holds what `action` returned."""
    engine = sessions.kw["bind"]
    done: list[object] = []

    def hook(conn, cursor, statement, *_):
        if not done and statement.lstrip().startswith(sql_start):
            done.append(None)
            with sessions() as other:
                done[0] = action(other)

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield done
    finally:
        event.remove(engine, "before_cursor_execute", hook)
    assert done, f"no statement started with {sql_start!r}: the interleaving did not happen"


def _queued_job(sessions, **values):
    with sessions() as session:
        owner, _ = create_key(session, "k")
        job = Job(owner_id=owner.id, name="j", spec={}, priority=4, **values)
        session.add(job)
        session.commit()
        return job.id


def transitions_cancel(job_id):
    return lambda session: transitions.cancel(session, job_id)


def _row(sessions, job_id):
    with sessions() as session:
        return session.get(Job, job_id)


def test_a_cancel_that_lands_after_the_worker_finished_changes_nothing(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, job_id, "a")
    with (
        sessions() as s,
        just_before(sessions, "UPDATE job", lambda o: transitions.finish(o, job_id, "a", JobStatus.succeeded)) as won,
    ):
        assert transitions.cancel(s, job_id) is None  # the API answers 409
    assert won == [True]
    job = _row(sessions, job_id)
    assert job.status == JobStatus.succeeded and job.finished_at is not None
    # the sweep never touches a finished job, however old its heartbeat
    assert recover_stale_jobs(sessions, lambda *_: None, stale_after_s=0, max_attempts=3)["cancelled"] == []


def test_a_worker_that_finishes_after_a_cancel_landed_records_its_success(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, job_id, "a")
        assert transitions.cancel(s, job_id) == JobStatus.cancelling
        assert transitions.finish(s, job_id, "a", JobStatus.succeeded, result={"metric": 1.0})
    job = _row(sessions, job_id)
    assert job.status == JobStatus.succeeded and job.result == {"metric": 1.0}  # its exports exist: not cancelled
    assert recover_stale_jobs(sessions, lambda *_: None, stale_after_s=0, max_attempts=3)["cancelled"] == []


def test_a_claim_that_lands_before_a_cancel_of_a_queued_job_leaves_it_cancelling(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s, just_before(sessions, "UPDATE job", lambda o: transitions.claim(o, job_id, "a")) as won:
        assert transitions.cancel(s, job_id) == JobStatus.cancelling  # the worker stops after its epoch
    assert won == [True]
    job = _row(sessions, job_id)
    assert job.status == JobStatus.cancelling and job.worker_id == "a" and job.finished_at is None


def test_a_cancel_that_lands_before_a_claim_keeps_the_job_from_running(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s, just_before(sessions, "UPDATE job", transitions_cancel(job_id)) as won:
        assert not transitions.claim(s, job_id, "a")
    assert won == [JobStatus.cancelled]
    job = _row(sessions, job_id)
    assert job.status == JobStatus.cancelled and job.attempts == 0 and job.finished_at is not None


def test_two_claims_of_one_job_one_wins(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s, just_before(sessions, "UPDATE job", lambda o: transitions.claim(o, job_id, "b")) as won:
        assert not transitions.claim(s, job_id, "a")
    assert won == [True]
    job = _row(sessions, job_id)
    assert job.worker_id == "b" and job.attempts == 1


def test_the_old_worker_of_a_requeued_job_can_no_longer_write_to_it(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, job_id, "a")
        assert transitions.record_epoch(s, job_id, "a", 0, RECORD)
    sent = []
    assert recover_stale_jobs(sessions, lambda *job: sent.append(job), stale_after_s=0, max_attempts=3)["requeued"] == [
        job_id
    ]
    assert sent == [(job_id, 4)]
    with sessions() as s:  # the old worker wakes up: nothing it says lands
        assert not transitions.heartbeat(s, job_id, "a")
        assert not transitions.record_epoch(s, job_id, "a", 1, RECORD)
        assert not transitions.finish(s, job_id, "a", JobStatus.succeeded)
        assert transitions.requeue_stopped(s, job_id, "a") is None
        assert transitions.claim(s, job_id, "b")  # the next worker
        assert not transitions.record_epoch(s, job_id, "a", 1, RECORD)
        assert not transitions.fail(s, job_id, "a", "late")
        assert transitions.record_epoch(s, job_id, "b", 1, {**RECORD, "metric": 95.0})
        epochs = [m.epoch for m in s.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch)]
    job = _row(sessions, job_id)
    assert job.status == JobStatus.running and job.worker_id == "b" and job.attempts == 2 and job.error is None
    assert epochs == [0, 1] and job.best_metric == 95.0


def test_a_heartbeat_that_lands_between_the_sweeps_read_and_its_requeue_keeps_the_job(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, job_id, "a")
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
        s.commit()
    sent = []
    with just_before(sessions, "UPDATE job", lambda o: transitions.heartbeat(o, job_id, "a")) as beat:
        done = recover_stale_jobs(sessions, lambda *job: sent.append(job), stale_after_s=60, max_attempts=3)
    assert beat == [True] and done["requeued"] == [] and sent == []
    job = _row(sessions, job_id)
    assert job.status == JobStatus.running and job.worker_id == "a"


def test_a_worker_that_finishes_between_the_sweeps_read_and_its_requeue_keeps_its_result(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, job_id, "a")
    finish = lambda o: transitions.finish(o, job_id, "a", JobStatus.succeeded)  # noqa: E731
    with just_before(sessions, "UPDATE job", finish) as won:
        done = recover_stale_jobs(sessions, lambda *_: None, stale_after_s=0, max_attempts=3)
    assert won == [True] and done["requeued"] == []
    assert _row(sessions, job_id).status == JobStatus.succeeded


def test_a_stopped_worker_requeues_its_job_without_counting_the_attempt_and_a_cancel_wins(sessions):
    running, cancelling = _queued_job(sessions), _queued_job(sessions)
    with sessions() as s:
        assert transitions.claim(s, running, "a") and transitions.claim(s, cancelling, "b")
        assert transitions.cancel(s, cancelling) == JobStatus.cancelling
        assert transitions.requeue_stopped(s, running, "a") == JobStatus.queued
        assert transitions.requeue_stopped(s, cancelling, "b") == JobStatus.cancelled
    job = _row(sessions, running)
    assert job.status == JobStatus.queued and job.attempts == 0 and job.worker_id is None
    assert job.enqueued_at is None  # counts as never sent: the next sweep sends it if the worker could not
    assert _row(sessions, cancelling).finished_at is not None


def test_a_claim_that_lands_before_a_delete_makes_the_delete_refuse(sessions):
    job_id = _queued_job(sessions)
    with sessions() as s, just_before(sessions, "UPDATE job", lambda o: transitions.claim(o, job_id, "a")) as won:
        assert not transitions.settle_for_delete(s, job_id)  # 409: cancel it first
    assert won == [True] and _row(sessions, job_id).status == JobStatus.running
    other = _queued_job(sessions)
    with sessions() as s:
        assert transitions.settle_for_delete(s, other) and not transitions.claim(s, other, "a")


def _queued_search(sessions, candidates):
    with sessions() as session:
        owner, _ = create_key(session, "k")
        search = Search(owner_id=owner.id, name="s", spec={})
        session.add(search)
        session.flush()
        jobs = [Job(owner_id=owner.id, name=f"c{i}", spec={}, search_id=search.id) for i in range(candidates)]
        session.add_all(jobs)
        session.commit()
        return search.id, [job.id for job in jobs]


def test_a_claim_racing_a_search_delete_either_wins_whole_or_changes_nothing(sessions):
    """A worker claims a candidate from another thread just as the delete cancels the queued ones; on
    PostgreSQL the claim waits for the delete's row locks. Either the delete settled every candidate
    (the claim lost) or it changed nothing (the claim won, the others are still queued)."""
    search_id, jobs = _queued_search(sessions, 3)
    claimed: list[bool] = []

    def claim_from_another_thread(_session):
        def claim():
            with sessions() as other:
                claimed.append(transitions.claim(other, jobs[0], "a"))

        thread = threading.Thread(target=claim)
        thread.start()
        return thread

    with sessions() as s, just_before(sessions, "UPDATE job", claim_from_another_thread) as started:
        settled = transitions.settle_search_for_delete(s, search_id)
    started[0].join(timeout=60)
    states = [_row(sessions, job_id).status for job_id in jobs]
    if settled:
        assert claimed == [False] and states == [JobStatus.cancelled] * 3
    else:
        assert claimed == [True] and states == [JobStatus.running, JobStatus.queued, JobStatus.queued]


def test_a_claim_before_a_search_delete_makes_it_refuse_without_cancelling(sessions):
    search_id, jobs = _queued_search(sessions, 3)
    with sessions() as s, just_before(sessions, "SELECT", lambda o: transitions.claim(o, jobs[1], "a")) as won:
        assert not transitions.settle_search_for_delete(s, search_id)
    assert won == [True]
    assert [_row(sessions, job_id).status for job_id in jobs] == [JobStatus.queued, JobStatus.running, JobStatus.queued]


def test_the_api_answers_409_when_the_worker_finished_first_and_gives_a_cancelled_queued_job_its_end(tmp_path):
    app, _, alice, _ = app_with_two_keys(tmp_path)
    client, headers = TestClient(app), {"Authorization": f"Bearer {alice}"}
    sessions = app.state.sessions
    with sessions() as session:
        owner = session.query(ApiKey).first().id
        running, queued = (Job(owner_id=owner, name=n, spec={}) for n in ("running", "queued"))
        session.add_all([running, queued])
        session.commit()
        running_id, queued_id = running.id, queued.id
        assert transitions.claim(session, running_id, "a")
    finish = lambda o: transitions.finish(o, running_id, "a", JobStatus.succeeded)  # noqa: E731
    with just_before(sessions, "UPDATE job", finish):
        response = client.post(f"/v1/jobs/{running_id}/cancel", headers=headers)
    assert response.status_code == 409 and response.json()["detail"] == f"job {running_id} is succeeded"
    cancelled = client.post(f"/v1/jobs/{queued_id}/cancel", headers=headers).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
