"""valid rule and message ids: another study's (or, for a message, one of a participant at a
site a site-scoped member does not cover) answers 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.participants.models import Participant
from server.reminders import messages, rules
from server.reminders.models import ReminderMessage, ReminderRule
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class RuleAccess:
    rule: ReminderRule
    study: StudyAccess


@dataclass(frozen=True)
class MessageAccess:
    message: ReminderMessage
    participant: Participant
    study: StudyAccess


def rule_access(permission: str) -> Callable[..., Awaitable[RuleAccess]]:
    async def dependency(
        rule_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> RuleAccess:
        rule = await rules.get(db, rule_id)
        access = await require_study_of(
            db, principal, rule.study_id, permission, thing="reminder rule"
        )
        return RuleAccess(rule=rule, study=access)

    return dependency


def message_access(permission: str, *, lock: bool) -> Callable[..., Awaitable[MessageAccess]]:
    async def dependency(
        message_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> MessageAccess:
        message, participant = await messages.get(db, message_id, lock=lock)
        access = await require_study_of(
            db,
            principal,
            message.study_id,
            permission,
            thing="message",
            site_id=participant.site_id,
        )
        return MessageAccess(message=message, participant=participant, study=access)

    return dependency


RuleReader = Annotated[RuleAccess, Depends(rule_access(Permission.READ))]
# Reminders are part of the schedule's configuration: the whole study's, like its protocols.
RuleConfigurer = Annotated[RuleAccess, Depends(rule_access(Permission.CONFIGURE))]
# Messages name participants and their visits: those who manage participants (coordinators).
MessageReader = Annotated[MessageAccess, Depends(message_access(Permission.MANAGE, lock=False))]
# Locked: two resends of one message at once take turns, and the second is told it is queued.
MessageResender = Annotated[MessageAccess, Depends(message_access(Permission.MANAGE, lock=True))]
