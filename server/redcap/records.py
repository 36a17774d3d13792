"""The REDCap rows a submission becomes: one builder for the preview and the sync alike."""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.core.db import one_of
from server.participants.models import Participant
from server.redcap.mapping import (
    DATE_VALIDATIONS,
    SourceKind,
    source_kind,
    split_module_source,
)
from server.submissions.models import Submission, SubmissionTask

EVENT = "redcap_event_name"
INSTRUMENT = "redcap_repeat_instrument"
INSTANCE = "redcap_repeat_instance"


@dataclass(frozen=True)
class SubmissionFacts:
    """Everything about one submission that a mapping can send."""

    submission_id: uuid.UUID
    study_id: uuid.UUID
    participant_id: uuid.UUID
    site_id: uuid.UUID
    participant_code: str
    timezone: str
    received_at: datetime
    started_at: datetime  # the device's clock when the session started
    visit: str  # the battery's key
    device_model: str
    app_version: str
    metrics: dict[tuple[str, str], Any]  # (module key, metric key) -> value


async def load_facts(
    db: AsyncSession, submission_ids: list[uuid.UUID]
) -> dict[uuid.UUID, SubmissionFacts]:
    if not submission_ids:
        return {}
    rows = await db.execute(
        select(
            Submission.id,
            Submission.study_id,
            Submission.received_at,
            Participant.id,
            Participant.site_id,
            Participant.participant_code,
            Participant.timezone,
            AssessmentSession.client_started_at,
            AssessmentSession.device,
            AssessmentSession.app_version,
            Battery.key,
        )
        .join(Participant, Participant.id == Submission.participant_id)
        .join(AssessmentSession, AssessmentSession.id == Submission.session_id)
        .join(Battery, Battery.id == AssessmentSession.battery_id)
        .where(one_of(db, Submission.id, submission_ids))
    )
    metrics: dict[uuid.UUID, dict[tuple[str, str], Any]] = {i: {} for i in submission_ids}
    tasks = await db.execute(
        select(SubmissionTask.submission_id, SubmissionTask.module_key, SubmissionTask.summary)
        .where(one_of(db, SubmissionTask.submission_id, submission_ids))
        .order_by(SubmissionTask.submission_id, SubmissionTask.position)
    )
    for submission_id, module_key, summary in tasks:
        for metric_key, value in (summary or {}).items():
            # A module run twice in one submission: its first value counts.
            if value is not None:
                metrics[submission_id].setdefault((module_key, metric_key), value)
    facts: dict[uuid.UUID, SubmissionFacts] = {}
    for row in rows:
        device = row[8] if isinstance(row[8], dict) else {}
        facts[row[0]] = SubmissionFacts(
            submission_id=row[0],
            study_id=row[1],
            received_at=row[2],
            participant_id=row[3],
            site_id=row[4],
            participant_code=row[5],
            timezone=row[6],
            started_at=row[7],
            device_model=str(device.get("model") or ""),
            app_version=row[9] or "",
            visit=row[10],
            metrics=metrics[row[0]],
        )
    return facts


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local(moment: datetime, timezone: str) -> datetime:
    zone = _zone(timezone)
    return moment.astimezone(zone) if zone is not None else moment


def format_number(value: Any, validation: str) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        number: float = float(value)
        if validation.startswith("number_") and validation.endswith("dp"):
            return f"{number:.{int(validation[7])}f}"
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if validation.startswith("number_") and validation.endswith("dp"):
            return f"{value:.{int(validation[7])}f}"
        if value.is_integer() and validation == "integer":
            return str(int(value))
        # Positional, never 1e-05: REDCap's number checks differ on exponents. The shortest
        # repr is positional already unless it has an exponent (Decimal costs 3 us a value).
        text = repr(value)
        return text if "e" not in text else format(Decimal(text), "f")
    text = str(value).strip()
    return text or None


def format_value(kind: SourceKind, value: Any, validation: str, timezone: str) -> str | None:
    if value is None:
        return None
    if kind == "number":
        return format_number(value, validation)
    if kind in ("date", "datetime"):
        assert isinstance(value, datetime)
        local = _local(value, timezone)
        if kind == "date" or validation in DATE_VALIDATIONS:
            return local.strftime("%Y-%m-%d")
        if validation.startswith("datetime_") and not validation.startswith("datetime_seconds"):
            return local.strftime("%Y-%m-%d %H:%M")
        return local.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value).strip()
    return text or None


def source_value(source: str, facts: SubmissionFacts) -> Any:
    match source:
        case "session.date" | "session.started_at":
            return facts.started_at
        case "session.visit":
            return facts.visit
        case "session.device":
            return facts.device_model
        case "session.app_version":
            return facts.app_version
    parts = split_module_source(source)
    return facts.metrics.get(parts) if parts else None


def field_values(document: dict[str, Any], facts: SubmissionFacts) -> dict[str, str]:
    """The mapped fields that have a value in this submission (blanks are left out)."""
    targets: dict[str, dict[str, str]] = document.get("targets") or {}
    values: dict[str, str] = {}
    for item in document["fields"]:
        source, field = item["source"], item["field"]
        validation = (targets.get(field) or {}).get("validation", "")
        text = format_value(
            source_kind(source), source_value(source, facts), validation, facts.timezone
        )
        if text is not None:
            values[field] = text
    return values


def build_row(
    document: dict[str, Any], facts: SubmissionFacts, values: dict[str, str], instance: int | None
) -> dict[str, Any]:
    row: dict[str, Any] = {document["record_id_field"]: facts.participant_code}
    if document.get("event"):
        row[EVENT] = document["event"]
    if document.get("repeating_instrument"):
        row[INSTRUMENT] = document["repeating_instrument"]
        row[INSTANCE] = instance
    row.update(values)
    return row
