"""Export requests over HTTP: who may ask, what they see, the link and the audit trail."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.archive.storage import storage_from_settings
from server.audit.models import AuditEntry
from server.core.config import Settings
from server.exports import service as exports_service
from server.exports.models import Export
from server.outbox import service as outbox
from server.outbox.models import OutboxEvent
from server.studies.models import Site, Study, StudyRole
from tests import factories


@dataclass
class Team:
    study: Study
    sites: list[Site]
    headers: dict[str, dict[str, str]]


async def _team(db: AsyncSession, settings: Settings) -> Team:
    study = await factories.create_study(db)
    sites = [await factories.create_site(db, study, code=c) for c in ("LON", "NYC")]
    headers = {}
    for role in StudyRole:
        user = await factories.create_user(db)
        await factories.add_member(db, study, user, role)
        headers[role.value] = await factories.auth_headers(db, settings, user)
    scoped = await factories.create_user(db)
    await factories.add_member(db, study, scoped, StudyRole.researcher, sites=[sites[0]])
    headers["scoped"] = await factories.auth_headers(db, settings, scoped)
    outsider = await factories.create_user(db)
    await factories.add_member(db, await factories.create_study(db), outsider,
                               StudyRole.coordinator)  # fmt: skip
    headers["outsider"] = await factories.auth_headers(db, settings, outsider)
    return Team(study, sites, headers)


async def _ask(client: AsyncClient, team: Team, who: str, **body: object) -> object:
    return await client.post(
        "/api/exports",
        params={"study_id": str(team.study.id)},
        json={"formats": ["csv", "parquet"], **body},
        headers=team.headers[who],
    )


async def test_researchers_and_coordinators_export_viewers_may_not_others_404(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    team = await _team(db, settings)
    for who in ("researcher", "coordinator"):
        response = await _ask(client, team, who)
        assert response.status_code == 202, response.text  # type: ignore[attr-defined]
        body = response.json()  # type: ignore[attr-defined]
        assert body["status"] == "queued" and body["download_url"] is None
        job = await db.get(OutboxEvent, uuid.UUID(body["job_id"]))
        assert job is not None and job.topic == outbox.EXPORT_BUILD
        assert job.payload == {"export_id": body["id"]}
    viewer = await _ask(client, team, "viewer")
    assert viewer.status_code == 403  # type: ignore[attr-defined]
    outsider = await _ask(client, team, "outsider")
    assert outsider.status_code == 404  # type: ignore[attr-defined]
    bad = await _ask(client, team, "researcher", formats=["xlsx"])
    assert bad.status_code == 422  # type: ignore[attr-defined]


async def test_a_site_scoped_member_exports_only_their_sites(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    team = await _team(db, settings)
    mine = await _ask(client, team, "scoped")
    assert mine.json()["filters"]["site_ids"] == [str(team.sites[0].id)]  # type: ignore[attr-defined]
    other = await _ask(client, team, "scoped", site_ids=[str(team.sites[1].id)])
    assert other.status_code == 404  # type: ignore[attr-defined]
    # A whole-study export is not theirs to see.
    whole = (await _ask(client, team, "coordinator")).json()  # type: ignore[attr-defined]
    seen = await client.get(f"/api/exports/{whole['id']}", headers=team.headers["scoped"])
    assert seen.status_code == 404
    own = await client.get(f"/api/exports/{mine.json()['id']}", headers=team.headers["scoped"])  # type: ignore[attr-defined]
    assert own.status_code == 200


async def test_done_export_offers_an_expiring_link_and_every_step_is_audited(
    client: AsyncClient, db: AsyncSession, settings: Settings, app_instance: object
) -> None:
    team = await _team(db, settings)
    asked = (await _ask(client, team, "researcher")).json()  # type: ignore[attr-defined]
    export = await db.get(Export, uuid.UUID(asked["id"]))
    assert export is not None
    key = f"exports/{team.study.id}/{export.id}.zip"
    app_settings: Settings = app_instance.state.settings  # type: ignore[attr-defined]
    storage_from_settings(app_settings).put(key, b"PK-zip-bytes")
    export.storage_key, export.size_bytes, export.sha256 = key, 12, "a" * 64
    await db.flush()

    status = await client.get(f"/api/exports/{export.id}", headers=team.headers["researcher"])
    read = status.json()
    assert read["status"] == "succeeded"
    url = read["download_url"]
    # The link carries the export's id and a signed expiry, nothing about its data.
    assert url.startswith(f"/api/exports/{export.id}/download?token=")
    got = await client.get(url, headers=team.headers["researcher"])
    assert got.status_code == 200 and got.content == b"PK-zip-bytes"
    forged = await client.get(url[:-3] + "xyz", headers=team.headers["researcher"])
    assert forged.status_code == 404
    secret = app_settings.JWT_SECRET_KEY.get_secret_value()
    old, _ = exports_service.download_token(secret, export.id, now=time.time() - 3600)
    expired = await client.get(f"/api/exports/{export.id}/download?token={old}",
                               headers=team.headers["researcher"])  # fmt: skip
    assert expired.status_code == 409
    viewer = await client.get(url, headers=team.headers["viewer"])
    assert viewer.status_code == 403

    frozen = await client.post(f"/api/exports/{export.id}/freeze",
                               headers=team.headers["researcher"])  # fmt: skip
    assert frozen.status_code == 200 and frozen.json()["frozen_at"]
    rerun = await client.post(f"/api/exports/{export.id}/rerun",
                              headers=team.headers["researcher"])  # fmt: skip
    assert rerun.status_code == 202
    assert rerun.json()["source_export_id"] == str(export.id)

    actions = list(
        await db.scalars(
            select(AuditEntry.action).where(AuditEntry.study_id == team.study.id)
            .order_by(AuditEntry.seq)
        )
    )  # fmt: skip
    assert actions == ["export_requested", "export_downloaded", "export_frozen",
                       "export_requested"]  # fmt: skip
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.action == "export_requested").order_by(AuditEntry.seq)
        .where(AuditEntry.study_id == team.study.id).limit(1)
    )  # fmt: skip
    assert entry is not None and entry.summary["filters"]["site_ids"] is None


async def test_an_unfinished_export_cannot_be_frozen(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    team = await _team(db, settings)
    asked = (await _ask(client, team, "coordinator")).json()  # type: ignore[attr-defined]
    response = await client.post(f"/api/exports/{asked['id']}/freeze",
                                 headers=team.headers["coordinator"])  # fmt: skip
    assert response.status_code == 409
    assert response.json()["error_code"] == "export_not_done"


async def test_the_study_s_exports_are_listed_newest_first_as_the_caller_may_see_them(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    team = await _team(db, settings)
    whole = [(await _ask(client, team, "coordinator")).json() for _ in range(3)]  # type: ignore[attr-defined]
    mine = (await _ask(client, team, "scoped")).json()  # type: ignore[attr-defined]
    export = await db.get(Export, uuid.UUID(whole[0]["id"]))
    assert export is not None
    export.storage_key, export.frozen_at = "exports/x.zip", export.created_at
    await db.flush()

    async def listed(who: str, **params: object) -> object:
        return await client.get("/api/exports", headers=team.headers[who],
                                params={"study_id": str(team.study.id), **params})  # fmt: skip

    seen, cursor = [], None
    while True:
        page = await listed("researcher", limit=2, **({"cursor": cursor} if cursor else {}))
        body = page.json()  # type: ignore[attr-defined]
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == [mine["id"]] + [w["id"] for w in reversed(whole)]
    frozen = (await listed("researcher", frozen="true")).json()  # type: ignore[attr-defined]
    assert [item["id"] for item in frozen["items"]] == [whole[0]["id"]]
    assert frozen["items"][0]["download_url"] is None  # a link is asked for one by one
    scoped = (await listed("scoped")).json()  # type: ignore[attr-defined]
    assert [item["id"] for item in scoped["items"]] == [mine["id"]]
    assert (await listed("viewer")).status_code == 403  # type: ignore[attr-defined]
    assert (await listed("outsider")).status_code == 404  # type: ignore[attr-defined]
    stray = await listed("scoped", cursor=whole[1]["id"])
    assert stray.status_code == 422  # type: ignore[attr-defined]
    assert stray.json()["error_code"] == "validation_error"  # type: ignore[attr-defined]
