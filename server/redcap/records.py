"""The REDCap rows a submission becomes: one builder for the preview and the sync alike."""

from __future__ import annotations

import functools
import math
import operator
import uuid
from collections.abc import Callable
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
    metrics: Metrics  # (module key, metric key) -> value


class Metrics:
    """(module key, metric key) -> the value in that module's summary; a module run twice in
    one submission: its first value counts. Looked up when asked (a mapping sends a few of a
    submission's metrics), not flattened into a dict of all of them."""

    __slots__ = ("_summaries",)

    def __init__(self, summaries: list[tuple[str, dict[str, Any] | None]]) -> None:
        self._summaries = summaries

    def get(self, key: tuple[str, str]) -> Any:
        module_key, metric_key = key
        for module, summary in self._summaries:
            if module == module_key and summary:
                value = summary.get(metric_key)
                if value is not None:
                    return value
        return None


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
        .where(one_of(Submission.id, submission_ids))
    )
    summaries: dict[uuid.UUID, list[tuple[str, dict[str, Any] | None]]] = {
        i: [] for i in submission_ids
    }
    tasks = await db.execute(
        select(SubmissionTask.submission_id, SubmissionTask.module_key, SubmissionTask.summary)
        .where(one_of(SubmissionTask.submission_id, submission_ids))
        .order_by(SubmissionTask.submission_id, SubmissionTask.position)
    )
    for submission_id, module_key, summary in tasks:
        summaries[submission_id].append((module_key, summary))
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
            metrics=Metrics(summaries[row[0]]),
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


Formatter = Callable[[Any, str], str | None]  # (a non-null value, the timezone) -> its text


@functools.lru_cache(maxsize=256)
def formatter(kind: SourceKind, validation: str) -> Formatter:
    """How a value of this kind is written into a field with this validation: the checks that
    depend on the field only are made once, not once a value (a batch formats thousands)."""
    if kind == "number":
        places = (
            int(validation[7])
            if validation.startswith("number_") and validation.endswith("dp")
            else None
        )
        integer = validation == "integer"

        def number(value: Any, _timezone: str) -> str | None:
            if isinstance(value, bool):
                return "1" if value else "0"
            if isinstance(value, int):
                return f"{float(value):.{places}f}" if places is not None else str(value)
            if not isinstance(value, float):
                return _text(value, _timezone)
            if not math.isfinite(value):
                return None
            if places is not None:
                return f"{value:.{places}f}"
            if integer and value.is_integer():
                return str(int(value))
            # Positional, never 1e-05: REDCap's number checks differ on exponents. The
            # shortest repr is positional already unless it has an exponent (Decimal costs
            # 3 us a value).
            text = repr(value)
            return text if "e" not in text else format(Decimal(text), "f")

        return number
    if kind in ("date", "datetime"):
        if kind == "date" or validation in DATE_VALIDATIONS:
            pattern = "%Y-%m-%d"
        elif validation.startswith("datetime_") and not validation.startswith("datetime_seconds"):
            pattern = "%Y-%m-%d %H:%M"
        else:
            pattern = "%Y-%m-%d %H:%M:%S"

        def moment(value: Any, timezone: str) -> str | None:
            assert isinstance(value, datetime)
            return _local(value, timezone).strftime(pattern)

        return moment
    return _text


def _text(value: Any, _timezone: str) -> str | None:
    return str(value).strip() or None


def format_value(kind: SourceKind, value: Any, validation: str, timezone: str) -> str | None:
    return None if value is None else formatter(kind, validation)(value, timezone)


def _getter(source: str) -> Callable[[SubmissionFacts], Any]:
    match source:
        case "session.date" | "session.started_at":
            return operator.attrgetter("started_at")
        case "session.visit":
            return operator.attrgetter("visit")
        case "session.device":
            return operator.attrgetter("device_model")
        case "session.app_version":
            return operator.attrgetter("app_version")
    parts = split_module_source(source)
    if parts is None:
        return lambda _facts: None
    return lambda facts: facts.metrics.get(parts)


ValueBuilder = Callable[[SubmissionFacts], dict[str, str]]


def value_builder(document: dict[str, Any]) -> ValueBuilder:
    """field_values for one mapping, its fields looked up once: a batch builds 500 rows."""
    targets: dict[str, dict[str, str]] = document.get("targets") or {}
    steps = [
        (
            item["field"],
            _getter(item["source"]),
            formatter(
                source_kind(item["source"]),
                (targets.get(item["field"]) or {}).get("validation", ""),
            ),
        )
        for item in document["fields"]
    ]

    def values_of(facts: SubmissionFacts) -> dict[str, str]:
        values: dict[str, str] = {}
        zone = facts.timezone
        for field, get, write in steps:
            value = get(facts)
            if value is not None:
                text = write(value, zone)
                if text is not None:
                    values[field] = text
        return values

    return values_of


def field_values(document: dict[str, Any], facts: SubmissionFacts) -> dict[str, str]:
    """The mapped fields that have a value in this submission (blanks are left out)."""
    return value_builder(document)(facts)


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
