"""The preview: exactly the rows the sync would send for a submission, built the same way."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Conflict, NotFound
from server.redcap import records, service
from server.redcap.models import RedcapConnection, RedcapMapping, RedcapSyncState
from server.redcap.numbering import max_instances
from server.redcap.schemas import PreviewRead
from server.studies.access import SiteScope
from server.submissions.models import Submission, SubmissionStatus


async def preview(
    db: AsyncSession, *, connection: RedcapConnection, scope: SiteScope, submission_id: uuid.UUID
) -> PreviewRead:
    """Exactly the rows the sync would send for this submission, built the same way."""
    mapping = await db.get(RedcapMapping, connection.id)
    if mapping is None:
        raise NotFound("This connection has no field mapping yet.")
    facts = (await records.load_facts(db, [submission_id])).get(submission_id)
    if facts is None or facts.study_id != connection.study_id or not scope.covers(facts.site_id):
        raise NotFound("No such submission.")
    status = await db.scalar(select(Submission.status).where(Submission.id == submission_id))
    if status == SubmissionStatus.quarantined:
        # Not an empty preview: nothing at all is sent for it until a reprocess accepts it.
        raise Conflict(
            "This submission is quarantined: nothing is sent to REDCap until a reprocess "
            "accepts it.",
            error_code="submission_quarantined",
        )
    document = dict(mapping.document)
    instrument = document.get("repeating_instrument") or None
    event = document.get("event") or None
    state = (
        await db.execute(
            select(RedcapSyncState).where(RedcapSyncState.submission_id == submission_id)
        )
    ).scalar_one_or_none()
    values = records.field_values(document, facts)
    instance: int | None = None
    assigned = False
    if instrument:
        key = (facts.participant_code, event, instrument)
        if (
            state is not None
            and state.connection_id == connection.id
            and state.instance is not None
            and (state.record_id, state.event, state.instrument) == key
        ):
            instance, assigned = state.instance, True
        else:
            highest = await max_instances(
                db, connection.id, instrument, {facts.participant_code}, event=event or None
            )
            instance = highest.get((facts.participant_code, event or ""), 0) + 1
    route = await service.connection_for(db, study_id=facts.study_id, site_id=facts.site_id)
    return PreviewRead(
        connection_id=connection.id,
        submission_id=submission_id,
        records=[records.build_row(document, facts, values, instance)] if values else [],
        instance_assigned=assigned,
        routed_here=route is not None and route.id == connection.id,
        status=state.status if state is not None else None,
    )
