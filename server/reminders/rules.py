"""Reminder rules: a study's configuration of when each protocol visit's participants are
reminded, by which channels, and when not. Services flush, never commit."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import clock
from server.core.errors import Conflict, NotFound, Unprocessable
from server.reminders.models import ReminderRule
from server.reminders.schemas import RuleCreate, RuleRead, RuleSettings, RuleUpdate
from server.schedules.models import ScheduleProtocol, ScheduleVisit

# What a rule's row holds of RuleSettings, in the order an audit summary lists them.
SETTINGS = tuple(RuleSettings.model_fields)


def _duplicate() -> Conflict:
    return Conflict(
        "This visit already has a rule with this trigger (and hours before close).",
        error_code="reminder_rule_exists",
    )


async def _visit_label(db: AsyncSession, *, study_id: uuid.UUID, visit_id: uuid.UUID) -> str:
    """The visit's label, if it is a visit of one of the study's protocols (else 404)."""
    label = await db.scalar(
        select(ScheduleVisit.label)
        .join(ScheduleProtocol, ScheduleProtocol.id == ScheduleVisit.protocol_id)
        .where(ScheduleVisit.id == visit_id, ScheduleProtocol.study_id == study_id)
    )
    if label is None:
        raise NotFound(
            "No such visit in this study's protocols.",
            details=[{"loc": ["body", "visit_id"], "msg": "no such visit in this study"}],
        )
    return label


def read(rule: ReminderRule, visit_label: str | None) -> RuleRead:
    return RuleRead(
        id=rule.id,
        study_id=rule.study_id,
        visit_id=rule.visit_id,
        visit_label=visit_label,
        trigger=rule.trigger,
        hours_before_close=rule.hours_before_close or None,
        channels=list(rule.channels),
        quiet_start=rule.quiet_start,
        quiet_end=rule.quiet_end,
        stale_after_minutes=rule.stale_after_minutes,
        escalate_to_sms_after_hours=rule.escalate_to_sms_after_hours,
        active=rule.active,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


def summary(rule: ReminderRule) -> dict[str, Any]:
    """What the audit trail keeps of a rule: its settings (no participant data in a rule)."""
    return {
        "visit_id": str(rule.visit_id),
        "trigger": rule.trigger.value,
        "hours_before_close": rule.hours_before_close,
        "channels": list(rule.channels),
        "quiet_start": rule.quiet_start.strftime("%H:%M"),
        "quiet_end": rule.quiet_end.strftime("%H:%M"),
        "stale_after_minutes": rule.stale_after_minutes,
        "escalate_to_sms_after_hours": rule.escalate_to_sms_after_hours,
        "active": rule.active,
    }


def _apply(rule: ReminderRule, settings: RuleSettings) -> None:
    for name in SETTINGS:
        setattr(rule, name, getattr(settings, name))
    rule.hours_before_close = settings.hours_before_close or 0
    rule.channels = [c.value for c in settings.channels]


async def _save(db: AsyncSession, rule: ReminderRule) -> None:
    """Flushed in a savepoint: a duplicate found by the unique key (two requests at once)
    is a 409 and leaves the request's transaction usable."""
    with db.no_autoflush:  # a changed rule is flushed below, in the savepoint
        taken = await db.scalar(
            select(ReminderRule.id).where(
                ReminderRule.visit_id == rule.visit_id,
                ReminderRule.trigger == rule.trigger,
                ReminderRule.hours_before_close == rule.hours_before_close,
                ReminderRule.id != rule.id,
            )
        )
    if taken is not None:
        raise _duplicate()
    try:
        async with db.begin_nested():
            db.add(rule)
            await db.flush()
    except IntegrityError:
        raise _duplicate() from None


async def create(db: AsyncSession, *, study_id: uuid.UUID, rule_in: RuleCreate) -> RuleRead:
    label = await _visit_label(db, study_id=study_id, visit_id=rule_in.visit_id)
    rule = ReminderRule(id=uuid.uuid4(), study_id=study_id, visit_id=rule_in.visit_id)
    _apply(rule, rule_in)
    await _save(db, rule)
    return read(rule, label)


async def list_rules(db: AsyncSession, *, study_id: uuid.UUID) -> list[RuleRead]:
    rows = await db.execute(
        select(ReminderRule, ScheduleVisit.label)
        .outerjoin(ScheduleVisit, ScheduleVisit.id == ReminderRule.visit_id)
        .where(ReminderRule.study_id == study_id)
        .order_by(ScheduleVisit.label, ReminderRule.trigger, ReminderRule.hours_before_close)
    )
    return [read(rule, label) for rule, label in rows.all()]


async def get(db: AsyncSession, rule_id: uuid.UUID) -> ReminderRule:
    rule = await db.get(ReminderRule, rule_id)
    if rule is None:
        raise NotFound("No such reminder rule.")
    return rule


async def read_one(db: AsyncSession, rule: ReminderRule) -> RuleRead:
    label = await db.scalar(select(ScheduleVisit.label).where(ScheduleVisit.id == rule.visit_id))
    return read(rule, label)


async def update(db: AsyncSession, *, rule: ReminderRule, rule_in: RuleUpdate) -> RuleRead:
    """The rule with the fields sent changed, checked as a whole (a trigger changed away from
    before_close needs hours_before_close 0 or null sent with it)."""
    current = read(rule, None).model_dump(include=set(SETTINGS))
    try:
        merged = RuleSettings.model_validate({**current, **rule_in.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        raise Unprocessable(
            "The rule as changed is not valid.",
            details=[
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ],
        ) from None
    _apply(rule, merged)
    rule.updated_at = clock.now()
    await _save(db, rule)
    return await read_one(db, rule)


async def delete(db: AsyncSession, *, rule: ReminderRule) -> None:
    """Gone; messages already written keep their rows (and their history)."""
    await db.delete(rule)
    await db.flush()
