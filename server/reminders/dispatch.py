"""The dispatch tick (beat, every minute): what became due since the last tick becomes one
message row per (visit occurrence, rule, channel), with its outbox row, in one transaction.

Exactly once, however many ticks run: the watermark row (reminder_dispatch) is held FOR UPDATE
for the tick, so two ticks of the same minute run one after the other and the second looks at
an empty interval; and the message's unique key turns anything found twice into nothing. A
late tick looks back to where the last one stopped; what it finds later than the rule's
staleness limit is recorded as skipped, never sent late. Quiet hours move send_at to the
morning; the outbox row is then due at send_at, so the relay publishes it then (no Celery ETA).

Found by one statement over the materialised schedule: each rule's occurrences come from an
index range scan, on window_start (pending) for window-open rules and on window_end for the
rest (ix_visit_occurrences_due, ix_visit_occurrences_closing), escalations from the messages'
escalate_at index. Coordinator tasks for missed required visits come from the same range.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox import service as outbox
from server.reminders.models import Channel, MessageKind, MessageStatus
from server.reminders.quiet import send_time

# The first tick of a new deployment looks back this far (nothing older is reminded).
FIRST_LOOKBACK = timedelta(minutes=1)

_REACH = """
    JOIN participants p ON p.id = o.participant_id AND p.status <> 'withdrawn'
    LEFT JOIN participant_contacts c ON c.participant_id = p.id
"""
_COLUMNS = """
    o.id AS occurrence_id, o.participant_id, o.study_id, o.site_id, r.id AS rule_id,
    r.channels, r.quiet_start, r.quiet_end, r.stale_after_minutes, p.timezone,
    (c.email_enc IS NOT NULL AND NOT c.email_opt_out) AS email,
    (c.phone_enc IS NOT NULL AND NOT c.sms_opt_out) AS sms,
    (c.push_enc IS NOT NULL AND NOT c.push_opt_out) AS push
"""
# Built from the constant fragments above only.
_DUE = text(f"""
    SELECT {_COLUMNS}, o.window_start AS moment, 'reminder' AS kind
    FROM reminder_rules r
    JOIN LATERAL (
        SELECT * FROM visit_occurrences o
        WHERE o.visit_id = r.visit_id AND o.status IN ('upcoming', 'open')
          AND o.window_start > :through AND o.window_start <= :now
    ) o ON true
    {_REACH}
    WHERE r.active AND r.trigger = 'window_open'
    UNION ALL
    SELECT {_COLUMNS}, o.window_end - make_interval(hours => r.hours_before_close), 'reminder'
    FROM reminder_rules r
    JOIN LATERAL (
        SELECT * FROM visit_occurrences o
        WHERE o.visit_id = r.visit_id AND o.status IN ('upcoming', 'open')
          AND o.window_end > :through + make_interval(hours => r.hours_before_close)
          AND o.window_end <= :now + make_interval(hours => r.hours_before_close)
    ) o ON true
    {_REACH}
    WHERE r.active AND r.trigger = 'before_close'
    UNION ALL
    SELECT {_COLUMNS}, o.window_end, 'missed_visit'
    FROM reminder_rules r
    JOIN LATERAL (
        SELECT * FROM visit_occurrences o
        WHERE o.visit_id = r.visit_id AND o.status IN ('upcoming', 'open', 'missed')
          AND o.window_end > :through AND o.window_end <= :now
    ) o ON true
    {_REACH}
    WHERE r.active AND r.trigger = 'missed'
    UNION ALL
    SELECT {_COLUMNS}, m.escalate_at, 'escalation'
    FROM reminder_messages m
    JOIN reminder_rules r ON r.id = m.rule_id
    JOIN visit_occurrences o ON o.id = m.occurrence_id AND o.status IN ('upcoming', 'open')
    {_REACH}
    WHERE m.escalate_at > :through AND m.escalate_at <= :now
""")  # noqa: S608

# A missed required visit: one task on the coordinators' list, whatever the rules say.
_TASKS = text("""
    INSERT INTO coordinator_tasks
        (id, study_id, site_id, participant_id, occurrence_id, kind, title, status, created_at)
    SELECT gen_random_uuid(), o.study_id, o.site_id, o.participant_id, o.id, 'missed_visit',
           left(p.participant_code || ': ' || v.label || ' missed', 300), 'open', :now
    FROM visit_occurrences o
    JOIN schedule_visits v ON v.id = o.visit_id AND v.required
    JOIN participants p ON p.id = o.participant_id AND p.status <> 'withdrawn'
    WHERE o.status IN ('upcoming', 'open', 'missed')
      AND o.window_end > :through AND o.window_end <= :now
    ON CONFLICT (occurrence_id, kind) DO NOTHING
""")

_INSERT = text("""
    INSERT INTO reminder_messages
        (id, study_id, site_id, participant_id, occurrence_id, rule_id, channel, kind, moment,
         send_at, status, attempts, error, job_id, created_at, updated_at)
    SELECT t.id, t.study_id, t.site_id, t.participant_id, t.occurrence_id, t.rule_id,
           t.channel, t.kind, t.moment, t.send_at, t.status, 0, NULLIF(t.e, ''),
           NULLIF(t.j, '')::uuid, :now, :now
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:studies AS uuid[]), CAST(:sites AS uuid[]),
        CAST(:participants AS uuid[]), CAST(:occurrences AS uuid[]), CAST(:rules AS uuid[]),
        CAST(:channels AS text[]), CAST(:kinds AS text[]), CAST(:moments AS timestamptz[]),
        CAST(:send_ats AS timestamptz[]), CAST(:statuses AS text[]), CAST(:errors AS text[]),
        CAST(:jobs AS text[])
    ) AS t(id, study_id, site_id, participant_id, occurrence_id, rule_id, channel, kind,
           moment, send_at, status, e, j)
    ON CONFLICT (occurrence_id, rule_id, channel) DO NOTHING
    RETURNING id
""")


@dataclass
class TickResult:
    found: int = 0
    queued: int = 0
    deferred: int = 0  # queued for later: inside quiet hours
    skipped: int = 0
    duplicates: int = 0  # already a message: found by an earlier tick, a resend, ...
    tasks: int = 0
    through: datetime | None = None
    job_ids: list[uuid.UUID] = field(default_factory=list, repr=False)


@dataclass
class _Row:
    values: dict[str, Any]
    job_id: uuid.UUID | None


def _plan(row: Any, now: datetime) -> _Row:
    kind = MessageKind(row.kind)
    reachable = {Channel.email: row.email, Channel.sms: row.sms, Channel.push: row.push}
    if kind == MessageKind.escalation:
        choices = [Channel.sms]
    else:
        choices = [Channel(c) for c in row.channels]
    channel = next((c for c in choices if reachable[c]), None)
    send_at = send_time(row.moment, row.timezone, row.quiet_start, row.quiet_end)
    status, error = MessageStatus.queued, ""
    if channel is None:
        channel, status = choices[0], MessageStatus.skipped
        error = "No channel to reach the participant by (no contact details, or opted out)."
    elif now - send_at > timedelta(minutes=row.stale_after_minutes):
        status = MessageStatus.skipped
        error = f"Stale: due {send_at.isoformat()}, found {now.isoformat()}; not sent late."
    job_id = uuid.uuid4() if status == MessageStatus.queued else None
    return _Row(
        {
            "id": uuid.uuid4(),
            "study_id": row.study_id,
            "site_id": row.site_id,
            "participant_id": row.participant_id,
            "occurrence_id": row.occurrence_id,
            "rule_id": row.rule_id,
            "channel": channel.value,
            "kind": kind.value,
            "moment": row.moment,
            "send_at": send_at,
            "status": status.value,
            "error": error,
        },
        job_id,
    )


async def _watermark(db: AsyncSession, now: datetime) -> datetime:
    await db.execute(
        text(
            "INSERT INTO reminder_dispatch (id, through) VALUES (1, :start) "
            "ON CONFLICT (id) DO NOTHING"
        ),
        {"start": now - FIRST_LOOKBACK},
    )
    through = await db.scalar(text("SELECT through FROM reminder_dispatch WHERE id = 1 FOR UPDATE"))
    assert isinstance(through, datetime)
    return through


async def tick(db: AsyncSession, *, now: datetime) -> TickResult:
    """One dispatch: the caller commits, and the relay then publishes the queued messages."""
    through = await _watermark(db, now)
    result = TickResult(through=through)
    if through >= now:
        return result
    params = {"through": through, "now": now}
    found = (await db.execute(_DUE, params)).all()
    result.found = len(found)
    planned = [_plan(row, now) for row in found]
    inserted = await _insert(db, planned, now) if planned else set()
    result.duplicates = len(planned) - len(inserted)
    events = []
    for row in planned:
        if row.values["id"] not in inserted:
            continue
        if row.job_id is None:
            result.skipped += 1
            continue
        result.queued += 1
        result.deferred += row.values["send_at"] > now
        result.job_ids.append(row.job_id)
        events.append(
            outbox.Event(
                topic=outbox.REMINDERS_SEND,
                payload={"message_id": str(row.values["id"])},
                subject_id=row.values["participant_id"],
                study_id=row.values["study_id"],
                id=row.job_id,
                due_at=max(row.values["send_at"], now),
            )
        )
    await outbox.add(db, events, created_at=now)
    result.tasks = int((await db.execute(_TASKS, params)).rowcount or 0)  # type: ignore[attr-defined]
    await db.execute(text("UPDATE reminder_dispatch SET through = :now WHERE id = 1"), {"now": now})
    return result


async def _insert(db: AsyncSession, planned: list[_Row], now: datetime) -> set[uuid.UUID]:
    columns: dict[str, list[Any]] = {
        "ids": [], "studies": [], "sites": [], "participants": [], "occurrences": [],
        "rules": [], "channels": [], "kinds": [], "moments": [], "send_ats": [],
        "statuses": [], "errors": [], "jobs": [],
    }  # fmt: skip
    for row in planned:
        v = row.values
        for key, value in (
            ("ids", v["id"]), ("studies", v["study_id"]), ("sites", v["site_id"]),
            ("participants", v["participant_id"]), ("occurrences", v["occurrence_id"]),
            ("rules", v["rule_id"]), ("channels", v["channel"]), ("kinds", v["kind"]),
            ("moments", v["moment"]), ("send_ats", v["send_at"]), ("statuses", v["status"]),
            ("errors", v["error"]), ("jobs", "" if row.job_id is None else str(row.job_id)),
        ):  # fmt: skip
            columns[key].append(value)
    returned = await db.execute(_INSERT, {**columns, "now": now})
    return {r[0] for r in returned}
