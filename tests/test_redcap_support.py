"""Shared set-up for the REDCap tests (a study, its battery, a coordinator, a stand-in), and
unit tests of the pieces that need no server: REDCap's refusals read, the throttle's window,
the token box and the production settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.core.config import ConfigurationError, Settings, load_settings
from server.core.crypto import SecretBox, SecretUnreadable, derived_dev_key, token_box
from server.modules.models import Module
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.redcap.models import RedcapSyncState
from server.redcap.rejections import blame_rows
from server.redcap.throttle import window_item
from server.studies.models import Site, Study, StudyRole
from server.submissions.models import Submission, SubmissionTask
from tests import factories
from tests import ingest_factories as ingest
from tests.redcap_standin import RedcapStandin

# A submission's summary the session mapping maps, and REDCap's message for a value under a
# field's minimum (srt_n_trials >= 1 in the classic project).
GOOD: dict[str, Any] = {"n_trials": 20, "mean_rt_ms": 301.5, "accuracy": 0.95}
OUT_OF_RANGE = "The value you provided is outside the acceptable range (1 - no limit)."


@dataclass
class World:
    """A study with two sites, a battery of SRT + CRT modules and a coordinator."""

    study: Study
    site_a: Site
    site_b: Site
    modules: list[Module]
    battery: Battery
    headers: dict[str, str]
    participants: dict[str, Participant] = field(default_factory=dict)

    @property
    def srt(self) -> str:
        return self.modules[0].key


async def make_world(db: AsyncSession, settings: Settings) -> World:
    study = await factories.create_study(db)
    site_a = await factories.create_site(db, study, code="A")
    site_b = await factories.create_site(db, study, code="B")
    suffix = uuid.uuid4().hex[:6]
    modules = [
        await ingest.create_module(db, f"srt_{suffix}"),
        await ingest.create_module(db, f"crt_{suffix}"),
    ]
    battery = await ingest.create_battery(db, study, modules)
    coordinator = await factories.create_user(db)
    await factories.add_member(db, study, coordinator, StudyRole.coordinator)
    headers = await factories.auth_headers(db, settings, coordinator)
    return World(study, site_a, site_b, modules, battery, headers)


def running(project: Any) -> Iterator[RedcapStandin]:
    """A stand-in on a free port for the test's duration (the body of a fixture)."""
    with RedcapStandin(project) as standin:
        yield standin


def session_mapping(world: World, **overrides: Any) -> dict[str, Any]:
    """The classic demo project's repeating cognitive_session form, from the SRT module."""
    document: dict[str, Any] = {
        "record_id_field": "record_id",
        "record_id_source": "participant_code",
        "event": None,
        "repeating_instrument": "cognitive_session",
        "instance_rule": "per_submission",
        "fields": [
            {"source": "session.date", "field": "session_date"},
            {"source": "session.started_at", "field": "session_started_at"},
            {"source": f"module.{world.srt}.mean_rt_ms", "field": "srt_mean_rt_ms"},
            {"source": f"module.{world.srt}.n_trials", "field": "srt_n_trials"},
            {"source": "session.visit", "field": "session_notes"},
        ],
    }
    document.update(overrides)
    return document


async def create_connection(
    client: AsyncClient, world: World, standin: RedcapStandin, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/redcap/connections",
        params={"study_id": str(world.study.id)},
        json={"api_url": standin.url, "token": standin.token, **body},
        headers=world.headers,
    )
    assert response.status_code == 201, response.text
    connection: dict[str, Any] = response.json()
    return connection


async def connect_and_map(
    client: AsyncClient, world: World, standin: RedcapStandin, **body: Any
) -> str:
    """A study-wide connection to the stand-in with the session mapping; its id."""
    connection = await create_connection(client, world, standin, **body)
    mapped = await client.put(
        f"/api/redcap/connections/{connection['id']}/mapping",
        json=session_mapping(world),
        headers=world.headers,
    )
    assert mapped.status_code == 200, mapped.text
    return str(connection["id"])


async def participant(
    db: AsyncSession, world: World, code: str, *, site: Site | None = None
) -> Participant:
    found = await factories.create_participant(db, site or world.site_a, code=code)
    world.participants[code] = found
    return found


async def submit(
    client: AsyncClient,
    db: AsyncSession,
    settings: Settings,
    world: World,
    who: Participant,
    *,
    n_trials: int = 20,
) -> uuid.UUID:
    """A visit of the SRT module through POST /api/submit; the submission id."""
    session = await ingest.start_session(db, who, world.battery)
    headers = await ingest.participant_headers(db, settings, who)
    body = ingest.payload(session.id, world.modules[:1], n_trials=n_trials)
    response = await client.post("/api/submit", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["submission_id"])


async def direct_submission(
    db: AsyncSession,
    world: World,
    who: Participant,
    *,
    summary: dict[str, Any],
    started_at: datetime | None = None,
    received_at: datetime | None = None,
) -> uuid.UUID:
    """A submission written as rows (any summary, valid or not), queued for sync like the
    ingest path queues it."""
    session = AssessmentSession(
        id=uuid.uuid4(),
        participant_id=who.id,
        study_id=who.study_id,
        battery_id=world.battery.id,
        client_started_at=started_at or datetime.now(UTC),
        device={"model": "Pixel 8"},
        app_version="2.3.1",
    )
    db.add(session)
    await db.flush()
    submission = Submission(
        client_submission_id=f"direct-{uuid.uuid4().hex}",
        participant_id=who.id,
        study_id=who.study_id,
        session_id=session.id,
        checksum="0" * 64,
        raw_payload=b"{}",
        received_at=received_at or datetime.now(UTC),
    )
    db.add(submission)
    await db.flush()
    db.add(
        SubmissionTask(
            submission_id=submission.id,
            position=0,
            module_id=world.modules[0].id,
            module_key=world.modules[0].key,
            module_version=1,
            summary=summary,
            trials=[],
            n_trials=0,
        )
    )
    await outbox.add(
        db,
        [outbox.Event(outbox.REDCAP_SYNC_SUBMISSION, {"submission_id": str(submission.id)},
                      submission.id)],
    )  # fmt: skip
    await db.flush()
    return submission.id


async def states(db: AsyncSession, *submission_ids: uuid.UUID) -> dict[uuid.UUID, RedcapSyncState]:
    rows = await db.execute(
        select(RedcapSyncState)
        .where(RedcapSyncState.submission_id.in_(submission_ids))
        .execution_options(populate_existing=True)
    )
    return {s.submission_id: s for s in rows.scalars()}


async def sync_outbox_rows(db: AsyncSession, submission_id: uuid.UUID) -> list[OutboxEvent]:
    rows = await db.execute(
        select(OutboxEvent).where(
            OutboxEvent.subject_id == submission_id,
            OutboxEvent.topic == outbox.REDCAP_SYNC_SUBMISSION,
        )
    )
    return list(rows.scalars())


def imports(standin: RedcapStandin) -> list[Any]:
    return [c for c in standin.calls if c.content == "record" and c.action == "import"]


def instances(standin: RedcapStandin) -> list[tuple[str, int, dict[str, Any]]]:
    return [
        (r["record_id"], r["redcap_repeat_instance"], r)
        for r in standin.records
        if r.get("redcap_repeat_instrument") == "cognitive_session"
    ]


# ----- REDCap's refusals, read ------------------------------------------------------------------
ROWS = [
    {"record_id": "P-1", "redcap_repeat_instance": 1, "srt_n_trials": "20", "age": "30"},
    {"record_id": "P-1", "redcap_repeat_instance": 2, "srt_n_trials": "0"},
    {"record_id": "P-2", "redcap_repeat_instance": 1, "srt_n_trials": "0", "shoe": "9"},
]


def test_csv_lines_blame_the_rows_with_that_record_and_value() -> None:
    message = (
        '"P-1","srt_n_trials","0","The value you provided is outside the acceptable range '
        '(1 - no limit)."\n'
        '"P-2","srt_n_trials","0","The value you provided is outside the acceptable range '
        '(1 - no limit)."'
    )
    blamed = blame_rows(message, ROWS, "record_id")
    assert sorted(blamed) == [1, 2]
    assert blamed[1].field == "srt_n_trials"
    assert blamed[1].message.startswith("The value you provided is outside the acceptable")


def test_unknown_fields_and_events_blame_the_rows_holding_them() -> None:
    unknown = "The following fields were not found in the project as real data fields: shoe, x"
    assert {i: b.field for i, b in blame_rows(unknown, ROWS, "record_id").items()} == {2: "shoe"}
    rows = [{"record_id": "1", "redcap_event_name": "visit_11_arm_1"}, {"record_id": "2"}]
    bad = "The following values of redcap_event_name are invalid: visit_11_arm_1"
    assert list(blame_rows(bad, rows, "record_id")) == [0]
    assert blame_rows("You do not have API Import/Update privileges", ROWS, "record_id") == {}


def test_repeat_instance_line_blames_by_instance_value() -> None:
    message = '"P-1","redcap_repeat_instance","2","redcap_repeat_instance must be ..."'
    assert list(blame_rows(message, ROWS, "record_id")) == [1]


# ----- throttle window ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("per_minute", "window", "amount", "seconds"),
    [(120, 10, 20, 10), (60, 1, 1, 1), (4, 10, 1, 15), (7, 10, 1, 10), (600, 60, 600, 60)],
)
def test_throttle_window_never_exceeds_the_rate(
    per_minute: int, window: int, amount: int, seconds: int
) -> None:
    item = window_item(per_minute, window)
    assert (item.amount, item.get_expiry()) == (amount, seconds)
    assert item.amount * 60 / item.get_expiry() <= per_minute


# ----- token box and settings -----------------------------------------------------------------
def test_token_box_round_trip_rotation_and_wrong_key(settings: Settings) -> None:
    box = token_box(settings)
    sealed = box.encrypt("0123456789ABCDEF0123456789ABCDEF")
    assert b"0123456789ABCDEF" not in sealed
    assert box.decrypt(sealed) == "0123456789ABCDEF0123456789ABCDEF"
    old, new = derived_dev_key("old"), derived_dev_key("new")
    rotated = SecretBox((new, old))
    assert rotated.decrypt(SecretBox((old,)).encrypt("x")) == "x"
    with pytest.raises(SecretUnreadable):
        SecretBox((new,)).decrypt(SecretBox((old,)).encrypt("x"))


def test_production_refuses_to_start_without_a_token_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("REDCAP_TOKEN_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    production = {
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": "s" * 48,
        "DATABASE_URL": "postgresql+asyncpg://metricis@db/metricis",
        "REDIS_URL": "redis://r:6379/0",
    }
    with pytest.raises(ConfigurationError, match="REDCAP_TOKEN_KEY"):
        load_settings(**production)
    with pytest.raises(ConfigurationError, match="REDCAP_TOKEN_KEY") as info:
        load_settings(**production, REDCAP_TOKEN_KEY="not-a-key-at-all")
    assert "not-a-key-at-all" not in str(info.value)
    key = derived_dev_key("anything")
    assert load_settings(**production, REDCAP_TOKEN_KEY=key).redcap_token_keys_configured == [key]
    # Development works out of the box, with a stable key derived from the JWT secret.
    urls = {k: production[k] for k in ("DATABASE_URL", "REDIS_URL")}
    dev = load_settings(JWT_SECRET_KEY="d" * 40, **urls)
    again = load_settings(JWT_SECRET_KEY="d" * 40, **urls)
    assert token_box(dev).decrypt(token_box(again).encrypt("t"))


def days_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)
