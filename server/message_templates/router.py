"""/api/templates: a study's message texts per kind and language, checked at save, and a
preview with one participant's real values. Staff only; writing them configures the study."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from server.audit import service as audit
from server.audit.models import AuditAction
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import error_responses
from server.message_templates import service
from server.message_templates.deps import TemplateConfigurer, TemplateReader
from server.message_templates.models import MessageTemplate, TemplateKind
from server.message_templates.schemas import (
    PreviewRead,
    PreviewRequest,
    TemplateCreate,
    TemplateRead,
    TemplateUpdate,
)
from server.participants import service as participants_service
from server.studies.deps import StudyConfigurer, StudyReader

router = APIRouter(prefix="/api/templates", tags=["templates"])


def _summary(template: MessageTemplate, **extra: object) -> dict[str, object]:
    return {"kind": template.kind.value, "language": template.language, **extra}


@router.post(
    "",
    response_model=TemplateRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, s409="The study has a template of this kind and language"),
)
async def create_template(
    template_in: TemplateCreate, access: StudyConfigurer, db: DBSession
) -> TemplateRead:
    """A template for ?study_id=; 422 template_invalid names each unknown placeholder or
    syntax error (with its line)."""
    template = await service.create(db, study_id=access.study.id, template_in=template_in)
    await audit.record(
        db,
        action=AuditAction.template_created,
        object_type="message_template",
        object_id=template.id,
        study_id=template.study_id,
        summary=_summary(template),
    )
    return TemplateRead.model_validate(template)


@router.get("", response_model=list[TemplateRead])
async def list_templates(
    access: StudyReader,
    db: DBSession,
    kind: TemplateKind | None = None,
    language: str | None = None,
) -> list[TemplateRead]:
    found = await service.list_templates(db, study_id=access.study.id, kind=kind, language=language)
    return [TemplateRead.model_validate(t) for t in found]


@router.get("/{template_id}", response_model=TemplateRead)
async def get_template(access: TemplateReader) -> TemplateRead:
    return TemplateRead.model_validate(access.template)


@router.patch("/{template_id}", response_model=TemplateRead)
async def update_template(
    template_in: TemplateUpdate, access: TemplateConfigurer, db: DBSession
) -> TemplateRead:
    template = await service.update(db, template=access.template, template_in=template_in)
    await audit.record(
        db,
        action=AuditAction.template_updated,
        object_type="message_template",
        object_id=template.id,
        study_id=template.study_id,
        summary=_summary(template, changed=sorted(template_in.model_fields_set)),
    )
    return TemplateRead.model_validate(template)


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(access: TemplateConfigurer, db: DBSession) -> Response:
    """The study's messages of this kind and language fall back to English or built-in text."""
    template = access.template
    await service.delete(db, template=template)
    await audit.record(
        db,
        action=AuditAction.template_deleted,
        object_type="message_template",
        object_id=template.id,
        study_id=template.study_id,
        summary=_summary(template),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{template_id}/preview", response_model=PreviewRead)
async def preview_template(
    preview_in: PreviewRequest, access: TemplateReader, db: DBSession, settings: AppSettings
) -> PreviewRead:
    """The message as this participant of the study would get it (their next visit's window
    in their zone); a site-scoped member may preview with their sites' participants."""
    participant = await participants_service.participant_of_study(
        db,
        study_id=access.template.study_id,
        participant_id=preview_in.participant_id,
        scope=access.study.sites,
    )
    rendered = await service.preview(
        db, template=access.template, participant=participant, settings=settings
    )
    return PreviewRead(subject=rendered.subject, body=rendered.body)
