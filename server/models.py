"""Every ORM model, imported once so metadata is complete (Alembic, tests)."""

from server.core.models import Base
from server.participants.models import Participant, ParticipantContact
from server.studies.models import Site, Study, StudyMembership
from server.user_sessions.models import UserSession
from server.users.models import User

__all__ = [
    "Base",
    "Participant",
    "ParticipantContact",
    "Site",
    "Study",
    "StudyMembership",
    "User",
    "UserSession",
]
