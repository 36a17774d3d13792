"""valid_session_id for staff: a session of another study answers 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from server.assessment_sessions.models import AssessmentSession
from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.core.errors import NotFound
from server.studies.access import Permission, require_study_of


async def session_reader(
    session_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> AssessmentSession:
    session = await db.get(AssessmentSession, session_id)
    if session is None:
        raise NotFound("No such session.")
    await require_study_of(db, principal, session.study_id, Permission.READ, thing="session")
    return session


SessionReader = Annotated[AssessmentSession, Depends(session_reader)]
