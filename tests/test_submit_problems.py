"""POST /api/submit with tasks that do not fit their modules: kept quarantined (202) with
each problem's place; a summary that disagrees with its trials accepted as sent; a body that
is not a submission refused (422). Listing and reprocess: tests/test_quarantine.py."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox.models import OutboxEvent
from server.submissions.models import Submission, SubmissionTask
from tests import ingest_factories as ingest
from tests import test_submit
from tests.test_submit import Visit, _count

visit = test_submit.visit  # the fixture: a participant's session of a 3-module battery


def _break(body: dict[str, Any], kind: str) -> dict[str, Any]:
    bad = copy.deepcopy(body)
    task = bad["tasks"][1]
    if kind == "unknown_module":
        task["module_key"] = "no_such_task"
    elif kind == "wrong_type":
        task["trials"][7]["rt_ms"] = "fast"
    elif kind == "extra_field":
        task["trials"][3]["secret"] = 1
    elif kind == "out_of_order":
        task["trials"][5]["trial_index"], task["trials"][6]["trial_index"] = 6, 5
    elif kind == "inconsistent":
        task["summary"]["mean_rt_ms"] += 25
    elif kind == "count_mismatch":
        task["summary"]["n_trials"] += 1
    elif kind == "summary_type":
        task["summary"]["n_trials"] = "many"
    elif kind == "missing_session":
        del bad["session_id"]
    return bad


@pytest.mark.parametrize(
    ("kind", "loc", "trial_index", "field", "rule", "words"),
    [
        (
            "unknown_module",
            ["body", "tasks", 1, "module_key"],
            None,
            "module_key",
            "unknown_module",
            "not in this session's battery",
        ),
        (
            "wrong_type",
            ["body", "tasks", 1, "trials", 7, "rt_ms"],
            7,
            "trials[7].rt_ms",
            "schema_type",
            "must be",
        ),
        (
            "extra_field",
            ["body", "tasks", 1, "trials", 3],
            3,
            "trials[3]",
            "schema_additionalProperties",
            "must not contain",
        ),
        (
            "out_of_order",
            ["body", "tasks", 1, "trials", 6, "trial_index"],
            6,
            "trials[6].trial_index",
            "trial_order",
            "out of order",
        ),
        (
            "summary_type",
            ["body", "tasks", 1, "summary", "n_trials"],
            None,
            "summary.n_trials",
            "schema_type",
            "must be",
        ),
    ],
)
async def test_tasks_off_their_modules_are_kept_quarantined_naming_the_place(
    client: AsyncClient,
    db: AsyncSession,
    visit: Visit,
    kind: str,
    loc: list[Any],
    trial_index: int | None,
    field: str,
    rule: str,
    words: str,
) -> None:
    body = _break(ingest.payload(visit.session.id, visit.modules, n_trials=20), kind)
    response = await client.post("/api/submit", json=body, headers=visit.headers)
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["status"] == "quarantined"
    [problem] = receipt["problems"]
    assert (problem["loc"], problem["trial_index"], problem["field"], problem["rule"]) == (
        loc,
        trial_index,
        field,
        rule,
    )
    assert (problem["task_index"], problem["module_key"]) == (1, body["tasks"][1]["module_key"])
    assert words in problem["message"].lower()
    # Stored as sent, with its checksum; no task rows; archived, not synced.
    stored = await db.get(Submission, receipt["submission_id"])
    assert stored is not None and orjson.loads(stored.raw_payload) == body
    assert stored.checksum == receipt["checksum"] and len(stored.checksum) == 64
    assert await _count(db, SubmissionTask, submission_id=stored.id) == 0
    topics = await db.scalars(select(OutboxEvent.topic).where(OutboxEvent.subject_id == stored.id))
    assert list(topics) == ["archive.submission"]


@pytest.mark.parametrize("kind", ["inconsistent", "count_mismatch"])
async def test_a_summary_that_disagrees_with_its_trials_is_accepted_as_sent(
    client: AsyncClient, db: AsyncSession, visit: Visit, kind: str
) -> None:
    body = _break(ingest.payload(visit.session.id, visit.modules, n_trials=20), kind)
    response = await client.post("/api/submit", json=body, headers=visit.headers)
    assert response.status_code == 201, response.text
    assert (response.json()["status"], response.json()["problems"]) == ("accepted", [])
    task = await db.get(SubmissionTask, (response.json()["submission_id"], 1))
    # The client's summary, kept as it said it: the server's own scoring is another record.
    assert task is not None and task.summary == body["tasks"][1]["summary"]
    assert (
        await _count(db, OutboxEvent, subject_id=task.submission_id) == 3
    )  # archive, REDCap sync, scoring


async def test_a_body_that_is_not_a_submission_is_422_and_stores_nothing(
    client: AsyncClient, db: AsyncSession, visit: Visit
) -> None:
    body = _break(ingest.payload(visit.session.id, visit.modules, n_trials=20), "missing_session")
    response = await client.post("/api/submit", json=body, headers=visit.headers)
    assert response.status_code == 422, response.text
    envelope = response.json()
    assert envelope["correlation_id"]
    assert envelope["details"][0]["loc"] == ["body", "session_id"]
    assert "required" in envelope["details"][0]["msg"].lower()
    assert await _count(db, Submission, participant_id=visit.participant.id) == 0
    assert await _count(db, OutboxEvent) == 0
