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

import orjson
from sqlalchemy import String, Uuid, column, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.batteries.models import Battery
from server.core.models import UTCDateTime
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


# PostgreSQL: one row a submission, its task summaries aggregated as one JSON text (parsed by
# orjson, not a row and a JSONB decode per task through the driver and SQLAlchemy).
_PG_FACTS = text(
    """
        SELECT s.id, s.study_id, s.received_at, p.id AS participant_id, p.site_id,
               p.participant_code, p.timezone, a.client_started_at,
               a.device->>'model' AS device_model, a.app_version, b.key AS visit,
               (SELECT CAST(json_agg(json_build_array(t.module_key, t.summary)
                                     ORDER BY t.position) AS text)
                FROM submission_tasks AS t WHERE t.submission_id = s.id) AS summaries
        FROM submissions AS s
        JOIN participants AS p ON p.id = s.participant_id
        JOIN assessment_sessions AS a ON a.id = s.session_id
        JOIN batteries AS b ON b.id = a.battery_id
        WHERE s.id = ANY(CAST(:ids AS uuid[]))
        """
).columns(
    column("id", Uuid()),
    column("study_id", Uuid()),
    column("received_at", UTCDateTime()),
    column("participant_id", Uuid()),
    column("site_id", Uuid()),
    column("participant_code", String()),
    column("timezone", String()),
    column("client_started_at", UTCDateTime()),
    column("device_model", String()),
    column("app_version", String()),
    column("visit", String()),
    column("summaries", String()),
)


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
    if db.get_bind().dialect.name == "postgresql":
        rows = await db.execute(_PG_FACTS, {"ids": list(submission_ids)})
        return {
            row[0]: SubmissionFacts(
                submission_id=row[0],
                study_id=row[1],
                received_at=row[2],
                participant_id=row[3],
                site_id=row[4],
                participant_code=row[5],
                timezone=row[6],
                started_at=row[7],
                device_model=row[8] or "",
                app_version=row[9] or "",
                visit=row[10],
                metrics=Metrics(orjson.loads(row[11]) if row[11] else []),
            )
            for row in rows
        }
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
        .where(Submission.id.in_(submission_ids))
    )
    summaries: dict[uuid.UUID, list[tuple[str, dict[str, Any] | None]]] = {
        i: [] for i in submission_ids
    }
    tasks = await db.execute(
        select(SubmissionTask.submission_id, SubmissionTask.module_key, SubmissionTask.summary)
        .where(SubmissionTask.submission_id.in_(submission_ids))
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
    return _getter(source)(facts)


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
    """field_values for one mapping, its fields looked up once: a claim builds 500 rows."""
    targets: dict[str, dict[str, str]] = document.get("targets") or {}
    steps = [
        (
            item["field"],
            _getter(item["source"]),
            source_kind(item["source"]),
            (targets.get(item["field"]) or {}).get("validation", ""),
        )
        for item in document["fields"]
    ]

    def values_of(facts: SubmissionFacts) -> dict[str, str]:
        values: dict[str, str] = {}
        for field, get, kind, validation in steps:
            text = format_value(kind, get(facts), validation, facts.timezone)
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
