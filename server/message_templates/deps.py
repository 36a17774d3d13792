"""valid template ids: another study's template answers 404, like the study would."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.message_templates import service
from server.message_templates.models import MessageTemplate
from server.studies.access import Permission, StudyAccess, require_study_of


@dataclass(frozen=True)
class TemplateAccess:
    template: MessageTemplate
    study: StudyAccess


def template_access(permission: str) -> Callable[..., Awaitable[TemplateAccess]]:
    async def dependency(
        template_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> TemplateAccess:
        template = await service.get(db, template_id)
        # A template is the whole study's (of no site): any member may read it.
        access = await require_study_of(
            db, principal, template.study_id, permission, thing="template"
        )
        return TemplateAccess(template=template, study=access)

    return dependency


TemplateReader = Annotated[TemplateAccess, Depends(template_access(Permission.READ))]
# Writing one is configuring the study: coordinators of the whole study, never site-scoped.
TemplateConfigurer = Annotated[TemplateAccess, Depends(template_access(Permission.CONFIGURE))]
