"""The job states have one home, and the API tells clients which are final, so that no client (the
dashboard's JS included) keeps a list of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from squeezer.api.app import openapi_document
from squeezer.api.schemas import JobRead
from squeezer.jobs.result import JobResult
from squeezer.jobs.status import ACTIVE, TERMINAL, JobStatus
from squeezer.search.result import CandidateOutcome, CandidateStatus


def test_every_state_is_either_terminal_or_active():
    assert {s for s in JobStatus if s.is_terminal} == TERMINAL == {"succeeded", "failed", "cancelled"}
    assert {s for s in JobStatus if s.is_active} == ACTIVE == {"queued", "running", "cancelling"}


def test_a_job_and_a_search_say_whether_they_ended():
    fields = {f: None for f in JobRead.model_fields} | {"id": "j", "name": "n", "priority": 0, "epoch": 0}
    for status in JobStatus:
        job = JobRead(**fields | {"status": status, "created_at": datetime.now(UTC)})
        assert job.model_dump(mode="json")["terminal"] is status.is_terminal
    schemas = openapi_document()["components"]["schemas"]
    assert "terminal" in schemas["JobRead"]["required"] and "terminal" in schemas["SearchRead"]["required"]
    assert "terminal" in schemas["CandidateOutcome"]["required"]


def test_a_search_candidate_says_whether_it_ended():
    # the dashboard's search list counts finished candidates with this, not a set of names of its own
    ended = {s for s in get_args(CandidateStatus) if CandidateOutcome(name="c", status=s).terminal}
    assert ended == {"succeeded", "failed", "cancelled", "stopped"}
    assert CandidateOutcome(name="c", status="stopped").model_dump(mode="json")["terminal"] is True


def test_a_result_stored_by_an_older_version_still_reads():
    result = JobResult.model_validate({"metric": 1.0})  # rows may lack latency, warnings, statistics
    assert result.metric == 1.0 and result.latency == {} and result.warnings == [] and result.statistics == {}
