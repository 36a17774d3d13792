"""Assessment sessions over HTTP: the device starts, ends and resumes them (/api/session), staff
list a participant's. Here, not in server.assessment_sessions, because what they answer shows
the sessions' submissions (server.submissions.session_state)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from server.assessment_sessions import service
from server.assessment_sessions.schemas import (
    SessionEnd,
    SessionStart,
    SessionState,
)
from server.core.db import DBSession
from server.participant_auth.deps import CurrentParticipant
from server.participants.deps import ParticipantReader
from server.submissions import session_state
from server.submissions.session_state import SessionWithQuality

router = APIRouter(prefix="/api/session", tags=["sessions"])
staff_router = APIRouter(prefix="/api/participants", tags=["sessions"])


@router.post("/start", response_model=SessionState, status_code=status.HTTP_201_CREATED)
async def start_session(
    session_in: SessionStart, db: DBSession, me: CurrentParticipant, response: Response
) -> SessionState:
    session, created = await service.start(db, participant=me.participant, session_in=session_in)
    if not created:
        response.status_code = status.HTTP_200_OK  # resumed
    return await session_state.state_of(db, session)


@router.post("/end", response_model=SessionState)
async def end_session(end_in: SessionEnd, db: DBSession, me: CurrentParticipant) -> SessionState:
    # The same end again is answered like the first (200): ending is idempotent.
    session, _ = await service.end(db, participant=me.participant, end_in=end_in)
    return await session_state.state_of(db, session)


@router.get("/{session_id}", response_model=SessionState)
async def get_session(session_id: uuid.UUID, db: DBSession, me: CurrentParticipant) -> SessionState:
    session = await service.get_own(db, participant=me.participant, session_id=session_id)
    return await session_state.state_of(db, session)


@staff_router.get("/{participant_id}/sessions", response_model=list[SessionWithQuality])
async def list_participant_sessions(
    access: ParticipantReader, db: DBSession
) -> list[SessionWithQuality]:
    return await session_state.list_for_participant(db, participant_id=access.participant.id)
