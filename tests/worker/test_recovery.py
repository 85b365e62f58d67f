"""The stale-job sweep on a real database: what it requeues, fails and finishes; and the heartbeat."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from squeezer.db import ApiKey, Job, JobStatus
from squeezer.jobs.transitions import recover_stale_jobs
from squeezer.worker.sandbox.process import JobRun
from squeezer.worker.supervision import JobWatch
from tests.helpers import app_with_two_keys


def _job(session, owner, status, beat_age_s, attempts, worker_id=None):
    job = Job(
        owner_id=owner,
        worker_id=worker_id,
        name=f"{status}-{attempts}",
        spec={},
        status=status,
        attempts=attempts,
        priority=attempts,
        heartbeat_at=datetime.now(UTC) - timedelta(seconds=beat_age_s),
    )
    session.add(job)
    session.commit()
    return job.id


def test_the_sweep_requeues_fails_and_finishes_stale_jobs(tmp_path):
    app, queue, _, _ = app_with_two_keys(tmp_path)
    sessions = app.state.sessions
    with sessions() as session:
        owner = session.query(ApiKey).first().id
        lost = _job(session, owner, JobStatus.running, 120, attempts=1)
        alive = _job(session, owner, JobStatus.running, 5, attempts=1)
        hopeless = _job(session, owner, JobStatus.running, 120, attempts=3)
        stopping = _job(session, owner, JobStatus.cancelling, 120, attempts=1)
        waiting = _job(session, owner, JobStatus.queued, 120, attempts=0)

    done = recover_stale_jobs(sessions, queue.enqueue, stale_after_s=60, max_attempts=3)
    assert done == {"requeued": [lost], "failed": [hopeless], "cancelled": [stopping], "resent": []}
    assert queue.jobs == [(lost, 1)]  # back on the queue with its priority
    with sessions() as session:
        status = {j.id: j for j in session.query(Job)}
        assert status[lost].status == JobStatus.queued and status[lost].attempts == 1
        assert status[alive].status == JobStatus.running and status[waiting].status == JobStatus.queued
        assert status[hopeless].status == JobStatus.failed and "giving up after 3" in status[hopeless].error
        assert status[stopping].status == JobStatus.cancelled and status[stopping].finished_at is not None
    # a second sweep finds nothing: every change was conditional on the stale heartbeat
    assert recover_stale_jobs(sessions, queue.enqueue, 60, 3) == {
        "requeued": [],
        "failed": [],
        "cancelled": [],
        "resent": [],
    }


def test_queued_jobs_whose_message_may_be_lost_are_sent_again(tmp_path):
    app, queue, _, _ = app_with_two_keys(tmp_path)
    sessions = app.state.sessions
    with sessions() as session:
        owner = session.query(ApiKey).first().id
        old, fresh, never = (
            Job(owner_id=owner, name=n, spec={}, priority=p, enqueued_at=at)
            for n, p, at in (
                ("old", 7, datetime.now(UTC) - timedelta(seconds=600)),
                ("fresh", 1, datetime.now(UTC)),
                ("never", 2, None),  # the broker was down when it was submitted
            )
        )
        session.add_all([old, fresh, never])
        session.commit()
        old_id, never_id = old.id, never.id
    done = recover_stale_jobs(sessions, queue.enqueue, 60, 3, requeue_after_s=300)
    assert sorted(done["resent"]) == sorted([old_id, never_id])
    assert sorted(queue.jobs) == sorted([(old_id, 7), (never_id, 2)])
    assert recover_stale_jobs(sessions, queue.enqueue, 60, 3, requeue_after_s=300)["resent"] == []  # not again yet


def test_the_heartbeat_stamps_a_running_job(tmp_path):
    app, _, _, _ = app_with_two_keys(tmp_path)
    sessions = app.state.sessions
    with sessions() as session:
        job_id = _job(session, session.query(ApiKey).first().id, JobStatus.running, 600, 1, worker_id="w:1:a")
    run = JobRun()
    with JobWatch(sessions, job_id, "w:1:a", run, tmp_path, None, None, None, heartbeat_s=0.05, poll_s=0.05):
        time.sleep(0.3)
    assert run.reason is None  # a running job of its own: nothing to stop
    with sessions() as session:
        beat = session.get(Job, job_id).heartbeat_at
    assert datetime.now(UTC) - beat.replace(tzinfo=UTC) < timedelta(seconds=5)
