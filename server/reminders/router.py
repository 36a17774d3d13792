"""/api/reminders: a study's reminder rules (configured like its visit protocols) and the
messages they became, which coordinators follow and may send again."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core import clock
from server.core.db import DBSession
from server.core.errors import error_responses
from server.participants import service as participants_service
from server.reminders import messages, resend, rules
from server.reminders.deps import MessageReader, MessageResender, RuleConfigurer, RuleReader
from server.reminders.models import Channel, MessageStatus
from server.reminders.schemas import MessageRead, RuleCreate, RuleRead, RuleUpdate
from server.studies.deps import StudyConfigurer, StudyManager, StudyReader

router = APIRouter(prefix="/api/reminders", tags=["reminders"])


# --- rules ---------------------------------------------------------------------------------


@router.get("/rules", response_model=list[RuleRead])
async def list_rules(access: StudyReader, db: DBSession) -> list[RuleRead]:
    return await rules.list_rules(db, study_id=access.study.id)


@router.post(
    "/rules",
    response_model=RuleRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, s409="The visit has a rule of this trigger and hours"),
)
async def create_rule(rule_in: RuleCreate, access: StudyConfigurer, db: DBSession) -> RuleRead:
    """A rule for a visit of one of the study's protocols (404 for another study's visit)."""
    rule = await rules.create(db, study_id=access.study.id, rule_in=rule_in)
    await audit.record(
        db,
        action=AuditAction.reminder_rule_created,
        object_type="reminder_rule",
        object_id=rule.id,
        study_id=rule.study_id,
        summary=rules.summary(await rules.get(db, rule.id)),
    )
    return rule


@router.get("/rules/{rule_id}", response_model=RuleRead)
async def get_rule(access: RuleReader, db: DBSession) -> RuleRead:
    return await rules.read_one(db, access.rule)


@router.patch(
    "/rules/{rule_id}",
    response_model=RuleRead,
    responses=error_responses(409, s409="The visit has a rule of this trigger and hours"),
)
async def update_rule(rule_in: RuleUpdate, access: RuleConfigurer, db: DBSession) -> RuleRead:
    before = rules.summary(access.rule)
    rule = await rules.update(db, rule=access.rule, rule_in=rule_in)
    after = rules.summary(access.rule)
    await audit.record(
        db,
        action=AuditAction.reminder_rule_updated,
        object_type="reminder_rule",
        object_id=rule.id,
        study_id=rule.study_id,
        summary={k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]},
    )
    return rule


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(access: RuleConfigurer, db: DBSession) -> None:
    """The rule goes; the messages it already made keep their history."""
    summary = rules.summary(access.rule)
    await rules.delete(db, rule=access.rule)
    await audit.record(
        db,
        action=AuditAction.reminder_rule_deleted,
        object_type="reminder_rule",
        object_id=access.rule.id,
        study_id=access.rule.study_id,
        summary=summary,
    )


# --- messages ------------------------------------------------------------------------------


@router.get("/messages", response_model=list[MessageRead])
async def list_messages(
    access: StudyManager,
    db: DBSession,
    participant_id: uuid.UUID | None = None,
    status: MessageStatus | None = None,
    channel: Channel | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[MessageRead]:
    """The study's messages, newest first; a site-scoped member's: to their sites'
    participants. A failed one carries the provider's reason (error)."""
    if participant_id is not None:
        await participants_service.participant_of_study(
            db, study_id=access.study.id, participant_id=participant_id, scope=access.sites
        )
    return await messages.list_messages(
        db,
        study_id=access.study.id,
        scope=access.sites,
        participant_id=participant_id,
        status=status,
        channel=channel,
        limit=limit,
        offset=offset,
    )


@router.get("/messages/{message_id}", response_model=MessageRead)
async def get_message(access: MessageReader, db: DBSession) -> MessageRead:
    return await messages.read(db, access.message)


@router.post(
    "/messages/{message_id}/resend",
    response_model=MessageRead,
    responses=error_responses(
        409,
        s409="Not failed, skipped or cancelled (message_not_resendable), or the "
        "participant has withdrawn (participant_withdrawn)",
    ),
)
async def resend_message(access: MessageResender, db: DBSession) -> MessageRead:
    """Queue a failed, skipped or cancelled message again, to go now."""
    previous = access.message.status.value
    message = await resend.resend(db, message=access.message, now=clock.now())
    await audit.record(
        db,
        action=AuditAction.reminder_message_resent,
        object_type="reminder_message",
        object_id=message.id,
        study_id=message.study_id,
        site_id=access.participant.site_id,
        summary={
            "participant_id": str(message.participant_id),
            "occurrence_id": str(message.occurrence_id),
            "channel": message.channel.value,
            "kind": message.kind.value,
            "previous_status": previous,
            "job_id": str(message.job_id),
        },
    )
    return await messages.read(db, message)
