"""REDCap connections, their test, their field mapping and their sync states."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.core.crypto import token_box
from server.core.db import end_reads
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.redcap import mapping as mapping_rules
from server.redcap.client import client_for
from server.redcap.errors import RedcapUrlRefused
from server.redcap.models import RedcapConnection, RedcapMapping
from server.redcap.schemas import (
    ConnectionCreate,
    ConnectionTestResult,
    ConnectionUpdate,
    MappingIn,
    MappingRead,
    MappingTarget,
    RepeatingInstrument,
)
from server.redcap.structure import fetch_structure
from server.redcap.url_policy import check_api_url
from server.studies.access import SiteScope
from server.studies.models import Site, Study

log = structlog.get_logger(__name__)


# ----- connections -----------------------------------------------------------------------------
async def get(db: AsyncSession, connection_id: uuid.UUID) -> RedcapConnection:
    connection = await db.get(RedcapConnection, connection_id)
    if connection is None:
        raise NotFound("No such REDCap connection.")
    return connection


async def list_connections(
    db: AsyncSession, *, study_id: uuid.UUID, scope: SiteScope
) -> list[RedcapConnection]:
    query = scope.filter(
        select(RedcapConnection).where(RedcapConnection.study_id == study_id),
        RedcapConnection.site_id,
        study_wide_too=True,
    )
    rows = await db.execute(
        query.order_by(RedcapConnection.site_id.is_not(None), RedcapConnection.created_at)
    )
    return list(rows.scalars())


async def connection_for(
    db: AsyncSession, *, study_id: uuid.UUID, site_id: uuid.UUID
) -> RedcapConnection | None:
    """Where a participant's data goes: their site's connection, else the study-wide one."""
    rows = await db.execute(
        select(RedcapConnection).where(
            RedcapConnection.study_id == study_id,
            (RedcapConnection.site_id == site_id) | RedcapConnection.site_id.is_(None),
        )
    )
    connections = list(rows.scalars())
    for connection in connections:
        if connection.site_id == site_id:
            return connection
    return connections[0] if connections else None


async def _check_site(db: AsyncSession, *, study_id: uuid.UUID, site_id: uuid.UUID) -> None:
    site = await db.get(Site, site_id)
    if site is None or site.study_id != study_id:
        raise Unprocessable(
            "The site is not part of this study.",
            details=[{"loc": ["body", "site_id"], "msg": "no such site in this study"}],
        )


async def _check_url(settings: Settings, api_url: str) -> None:
    """Refused as any invalid field is (validation_error, naming api_url): the coordinator's
    form shows it there. Calls check again, on the addresses they connect to."""
    try:
        await check_api_url(settings, api_url)
    except RedcapUrlRefused as exc:
        raise Unprocessable(
            exc.message,
            details=[{"loc": ["body", "api_url"], "msg": exc.message, "type": exc.error_code}],
        ) from None


async def create_connection(
    db: AsyncSession, settings: Settings, *, study_id: uuid.UUID, connection_in: ConnectionCreate
) -> RedcapConnection:
    await _check_url(settings, connection_in.api_url)
    if connection_in.site_id is not None:
        await _check_site(db, study_id=study_id, site_id=connection_in.site_id)
    # NULLs are distinct to the unique constraint: one study-wide connection is kept here,
    # so two creates for the same study take turns.
    await db.execute(select(Study.id).where(Study.id == study_id).with_for_update())
    taken = await db.scalar(
        select(RedcapConnection.id).where(
            RedcapConnection.study_id == study_id,
            RedcapConnection.site_id == connection_in.site_id
            if connection_in.site_id is not None
            else RedcapConnection.site_id.is_(None),
        )
    )
    if taken is not None:
        scope = "this site" if connection_in.site_id else "the whole study"
        raise Conflict(
            f"There is already a REDCap connection for {scope}.",
            error_code="redcap_connection_exists",
            details={"connection_id": str(taken)},
        )
    connection = RedcapConnection(
        study_id=study_id,
        site_id=connection_in.site_id,
        api_url=connection_in.api_url,
        token_encrypted=token_box(settings).encrypt(connection_in.token),
        token_last4=connection_in.token[-4:],
        max_calls_per_minute=connection_in.max_calls_per_minute,
        batch_size=connection_in.batch_size,
        enabled=connection_in.enabled,
    )
    db.add(connection)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:
        raise Conflict(
            "There is already a REDCap connection for this site.",
            error_code="redcap_connection_exists",
        ) from None
    log.info(
        "redcap_connection_created",
        connection_id=str(connection.id),
        study_id=str(study_id),
        site_id=str(connection.site_id) if connection.site_id else None,
    )
    return connection


async def update_connection(
    db: AsyncSession,
    settings: Settings,
    *,
    connection: RedcapConnection,
    connection_in: ConnectionUpdate,
) -> RedcapConnection:
    changes = connection_in.model_dump(exclude_unset=True, exclude_none=True)
    if "api_url" in changes:
        await _check_url(settings, changes["api_url"])
    token = changes.pop("token", None)
    if token is not None:
        connection.token_encrypted = token_box(settings).encrypt(token)
        connection.token_last4 = token[-4:]
    if ("api_url" in changes and changes["api_url"] != connection.api_url) or token is not None:
        # Another project perhaps: what the last test said no longer holds.
        connection.project_title = connection.redcap_version = None
        connection.is_longitudinal = connection.has_repeating = None
        connection.last_tested_at = None
    for name, value in changes.items():
        setattr(connection, name, value)
    connection.updated_at = utcnow()
    await db.flush()
    log.info(
        "redcap_connection_updated",
        connection_id=str(connection.id),
        changed=sorted([*changes, *(["token"] if token else [])]),
    )
    return connection


async def delete_connection(db: AsyncSession, *, connection: RedcapConnection) -> None:
    await db.delete(connection)
    await db.flush()
    log.info("redcap_connection_deleted", connection_id=str(connection.id))


async def test_connection(
    db: AsyncSession, settings: Settings, *, connection: RedcapConnection
) -> ConnectionTestResult:
    """Ask REDCap about the project; store what it said on the connection.

    No transaction is open during the calls (end_reads); the update is a new, short one."""
    await end_reads(db)
    client = client_for(connection, settings, interactive=True)
    info = await client.project_info()
    version = await client.version()
    longitudinal = bool(int(info.get("is_longitudinal") or 0))
    has_repeating = bool(int(info.get("has_repeating_instruments_or_events") or 0))
    repeating: list[RepeatingInstrument] = []
    if has_repeating:
        repeating = [
            RepeatingInstrument(
                form_name=str(row.get("form_name") or ""),
                event_name=str(row["event_name"]) if row.get("event_name") else None,
            )
            for row in await client.repeating()
        ]
    now = utcnow()
    connection.project_title = str(info.get("project_title") or "")[:500]
    connection.redcap_version = (version or "")[:32] or None
    connection.is_longitudinal = longitudinal
    connection.has_repeating = has_repeating
    connection.last_tested_at = now
    await db.flush()
    project_id = str(info.get("project_id") or "")
    return ConnectionTestResult(
        project_id=int(project_id) if project_id.isdigit() else None,
        project_title=connection.project_title,
        redcap_version=connection.redcap_version,
        is_longitudinal=longitudinal,
        has_repeating=has_repeating,
        repeating_instruments=repeating,
        in_production=bool(int(info.get("in_production") or 0)),
        tested_at=now,
    )


# ----- mapping ---------------------------------------------------------------------------------
def _mapping_read(row: RedcapMapping) -> MappingRead:
    document = dict(row.document)
    targets = document.pop("targets", {}) or {}
    return MappingRead(
        connection_id=row.connection_id,
        document=MappingIn.model_validate(document),
        targets={name: MappingTarget.model_validate(t) for name, t in targets.items()},
        validated_at=row.validated_at,
    )


async def get_mapping_row(db: AsyncSession, connection_id: uuid.UUID) -> RedcapMapping | None:
    return await db.get(RedcapMapping, connection_id)


async def get_mapping(db: AsyncSession, *, connection: RedcapConnection) -> MappingRead:
    row = await get_mapping_row(db, connection.id)
    if row is None:
        raise NotFound("This connection has no field mapping yet.")
    return _mapping_read(row)


async def save_mapping(
    db: AsyncSession, settings: Settings, *, connection: RedcapConnection, mapping_in: MappingIn
) -> MappingRead:
    """Validate against the project's metadata as REDCap reports it now, then store.

    The study's catalogue is read first; REDCap is asked with no transaction open
    (end_reads); the mapping is written in a new, short one."""
    catalogue = await mapping_rules.module_metrics(db, connection.study_id)
    await end_reads(db)
    client = client_for(connection, settings, interactive=True)
    structure = await fetch_structure(client)
    targets = mapping_rules.validate(mapping_in, structure, catalogue)
    document = {**mapping_in.model_dump(mode="json"), "targets": targets}
    row = await get_mapping_row(db, connection.id)
    now = utcnow()
    if row is None:
        row = RedcapMapping(connection_id=connection.id, document=document, validated_at=now)
        db.add(row)
    else:
        row.document = document
        row.validated_at = now
        row.updated_at = now
    await db.flush()
    log.info("redcap_mapping_saved", connection_id=str(connection.id), fields=len(targets))
    return _mapping_read(row)
