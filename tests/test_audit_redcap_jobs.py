"""REDCap connection and mapping changes, resyncs, participant imports and dead-letter reruns:
one audit entry each, through the API, never holding the connection's token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core.config import Settings
from server.core.models import utcnow
from server.outbox import service as outbox
from server.outbox.models import JobStatus
from tests import factories
from tests.audit_helpers import entries, only_entry, text_of
from tests.redcap_standin import RedcapStandin, classic_project
from tests.test_jobs import add_event, create_submission
from tests.test_redcap_participant_import import import_job
from tests.test_redcap_support import (
    World,
    connect_and_map,
    create_connection,
    make_world,
    running,
)


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    project = classic_project()
    project.records = [
        {"record_id": "1001", "enrol_date": "2024-01-10", "enrollment_complete": "2",
         "redcap_data_access_group": "site_a"},
    ]  # fmt: skip
    yield from running(project)


@pytest.fixture
async def world(db: AsyncSession, settings: Settings) -> World:
    return await make_world(db, settings)


async def test_connection_create_update_delete_each_write_one_entry(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)
    url = f"/api/redcap/connections/{connection['id']}"
    new_token = "ab" * 16

    updated = await client.patch(
        url, json={"token": new_token, "batch_size": 50}, headers=world.headers
    )
    deleted = await client.delete(url, headers=world.headers)

    assert (updated.status_code, deleted.status_code) == (200, 204), updated.text
    created = await only_entry(db, AuditAction.redcap_connection_created, connection["id"])
    assert created.summary == {"api_host": "127.0.0.1", "enabled": True}
    assert created.study_id == world.study.id
    changed = await only_entry(db, AuditAction.redcap_connection_updated, connection["id"])
    assert changed.summary == {"fields": ["batch_size", "token"]}
    gone = await only_entry(db, AuditAction.redcap_connection_deleted, connection["id"])
    assert gone.summary == {"api_host": "127.0.0.1"}
    for entry in (created, changed, gone):
        assert classic.token not in text_of(entry) and new_token not in text_of(entry)
        assert classic.token[-4:] not in str(entry.summary)


async def test_saving_a_mapping_and_a_resync_are_recorded(
    client: AsyncClient, db: AsyncSession, world: World, classic: RedcapStandin
) -> None:
    connection_id = await connect_and_map(client, world, classic)

    resync = await client.post(
        f"/api/redcap/connections/{connection_id}/resync", json={}, headers=world.headers
    )

    assert resync.status_code == 200, resync.text
    mapped = await only_entry(db, AuditAction.redcap_mapping_saved, connection_id)
    assert mapped.summary == {"record_id_field": "record_id", "fields": 5}
    reset = await only_entry(db, AuditAction.redcap_resync, connection_id)
    assert reset.summary == {"submission_id": None, "reset": 0}


async def test_a_participant_import_from_redcap_writes_one_entry(
    client: AsyncClient, db: AsyncSession, settings: Settings, world: World, classic: RedcapStandin
) -> None:
    connection = await create_connection(client, world, classic)

    response = await import_job(
        client, db, settings, world, connection["id"], dag_to_site={"site_a": "A"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["report"]["created"] == 1
    entry = await only_entry(db, AuditAction.redcap_participants_imported, connection["id"])
    assert entry.summary == {"created": 1, "total_records": 1}
    # Written by the worker, in the name of the coordinator who asked for the import.
    created = await only_entry(db, AuditAction.redcap_connection_created, connection["id"])
    assert entry.actor_id is not None and entry.actor_id == created.actor_id


async def test_a_dead_letter_rerun_is_recorded_with_its_admin(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    submission = await create_submission(db)
    event = await add_event(db, submission, outbox.ARCHIVE_SUBMISSION)
    # What a task that failed for good leaves (workers.protocol): its row, failed, is the letter.
    event.status = JobStatus.failed
    event.error = "boom"
    event.attempts = 1
    event.finished_at = utcnow()
    await db.flush()
    dead = event
    admin = await factories.create_user(db, is_admin=True)
    headers = await factories.auth_headers(db, settings, admin)

    rerun = await client.post(f"/api/dead-letters/{dead.id}/rerun", headers=headers)
    again = await client.post(f"/api/dead-letters/{dead.id}/rerun", headers=headers)

    assert (rerun.status_code, again.status_code) == (200, 409), rerun.text
    entry = await only_entry(db, AuditAction.dead_letter_rerun, dead.id)
    assert (entry.actor_id, entry.study_id) == (admin.id, submission.study_id)
    assert entry.summary == {"topic": outbox.ARCHIVE_SUBMISSION}
    assert len(await entries(db, AuditAction.dead_letter_rerun, dead.id)) == 1
