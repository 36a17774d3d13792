"""A study's message templates: saved only once they check, one per (kind, language), and the
text a participant's message uses (theirs, a broader language, English, then built-in)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import clock
from server.core.config import Settings
from server.core.errors import Conflict, NotFound
from server.message_templates import defaults, render
from server.message_templates.models import MessageTemplate, TemplateKind
from server.message_templates.schemas import TemplateCreate, TemplateUpdate
from server.participants.models import Participant
from server.schedules.models import PENDING, ScheduleVisit, VisitOccurrence
from server.studies.models import Study

log = structlog.get_logger(__name__)


def _taken(kind: TemplateKind, language: str) -> Conflict:
    return Conflict(
        f"This study already has a {kind.value} template in {language!r}; edit that one.",
        error_code="template_exists",
    )


async def get(db: AsyncSession, template_id: uuid.UUID) -> MessageTemplate:
    template = await db.get(MessageTemplate, template_id)
    if template is None:
        raise NotFound("No such template.")
    return template


async def list_templates(
    db: AsyncSession,
    *,
    study_id: uuid.UUID,
    kind: TemplateKind | None = None,
    language: str | None = None,
) -> Sequence[MessageTemplate]:
    query = select(MessageTemplate).where(MessageTemplate.study_id == study_id)
    if kind is not None:
        query = query.where(MessageTemplate.kind == kind)
    if language is not None:
        query = query.where(MessageTemplate.language == defaults.normalise_language(language))
    return (await db.scalars(query.order_by(MessageTemplate.kind, MessageTemplate.language))).all()


async def create(
    db: AsyncSession, *, study_id: uuid.UUID, template_in: TemplateCreate
) -> MessageTemplate:
    render.check(template_in.kind, template_in.subject, template_in.body)
    language = defaults.normalise_language(template_in.language)
    existing = await list_templates(db, study_id=study_id, kind=template_in.kind, language=language)
    if existing:
        raise _taken(template_in.kind, language)
    template = MessageTemplate(
        study_id=study_id,
        kind=template_in.kind,
        language=language,
        subject=template_in.subject,
        body=template_in.body,
    )
    db.add(template)
    try:
        # A savepoint: another request may take the same key between the check and here.
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:
        raise _taken(template_in.kind, language) from None
    log.info("template_created", template_id=str(template.id), kind=template.kind.value)
    return template


async def update(
    db: AsyncSession, *, template: MessageTemplate, template_in: TemplateUpdate
) -> MessageTemplate:
    subject = template_in.subject if template_in.subject is not None else template.subject
    body = template_in.body if template_in.body is not None else template.body
    render.check(template.kind, subject, body)
    template.subject, template.body = subject, body
    await db.flush()
    return template


async def delete(db: AsyncSession, *, template: MessageTemplate) -> None:
    await db.delete(template)
    await db.flush()


async def template_for(
    db: AsyncSession, *, study_id: uuid.UUID, kind: TemplateKind, language: str | None
) -> tuple[str, str]:
    """(subject, body) for a participant speaking `language`: the study's template in it,
    else in its primary subtag ("pt-BR" -> "pt"), else the study's English one, else the
    built-in text in that language, else the built-in English."""
    candidates = defaults.language_candidates(language)
    rows = (
        await db.execute(
            select(MessageTemplate.language, MessageTemplate.subject, MessageTemplate.body).where(
                MessageTemplate.study_id == study_id,
                MessageTemplate.kind == kind,
                func.lower(MessageTemplate.language).in_([c.lower() for c in candidates]),
            )
        )
    ).all()
    found = {row.language.lower(): (row.subject, row.body) for row in rows}
    for candidate in candidates:
        if candidate.lower() in found:
            return found[candidate.lower()]
    return defaults.default_for(kind, language)


async def preview(
    db: AsyncSession, *, template: MessageTemplate, participant: Participant, settings: Settings
) -> render.Rendered:
    """The template as this participant would get it: their code, their next pending visit
    (or a sample window tomorrow if none) in their zone and language."""
    study = await db.get_one(Study, template.study_id)
    now = clock.now()
    upcoming = (
        await db.execute(
            select(VisitOccurrence.window_start, VisitOccurrence.window_end, ScheduleVisit.label)
            .join(ScheduleVisit, ScheduleVisit.id == VisitOccurrence.visit_id)
            .where(
                VisitOccurrence.participant_id == participant.id,
                VisitOccurrence.status.in_(PENDING),
                VisitOccurrence.window_end > now,
            )
            .order_by(VisitOccurrence.window_start)
            .limit(1)
        )
    ).first()
    if upcoming is not None:
        start, end, label = upcoming.window_start, upcoming.window_end, upcoming.label
    else:
        start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        end, label = start + timedelta(hours=12), "Example visit"
    context = render.context_for(
        participant_code=participant.participant_code,
        study_name=study.name,
        app_link=settings.PARTICIPANT_APP_URL,
        timezone=participant.timezone,
        window_start=start,
        window_end=end,
        language=participant.language,
        visit_label=label,
    )
    return render.render(template.kind, template.subject, template.body, context)
