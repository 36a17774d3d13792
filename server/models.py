"""Every ORM model, imported once so metadata is complete (Alembic, tests)."""

from server.assessment_sessions.models import AssessmentSession
from server.audit.models import AuditChainHead, AuditEntry
from server.batteries.models import Battery, BatteryModule
from server.core.models import Base
from server.item_banks.models import ItemBank
from server.modules.models import Module
from server.outbox.models import OutboxEvent
from server.participant_auth.models import AccessCode, ParticipantLogin
from server.participants.models import Participant, ParticipantContact
from server.redcap.models import RedcapConnection, RedcapMapping, RedcapSyncState
from server.reports.models import Report
from server.scoring.models import QualityCheck, StudyQualitySettings, TaskScore
from server.studies.models import Site, Study, StudyMembership, StudyMembershipSite
from server.submissions.models import Submission, SubmissionTask
from server.user_sessions.models import UserSession
from server.users.models import User

__all__ = [
    "AccessCode",
    "AssessmentSession",
    "AuditChainHead",
    "AuditEntry",
    "Base",
    "Battery",
    "BatteryModule",
    "ItemBank",
    "Module",
    "OutboxEvent",
    "Participant",
    "ParticipantContact",
    "ParticipantLogin",
    "QualityCheck",
    "RedcapConnection",
    "RedcapMapping",
    "RedcapSyncState",
    "Report",
    "Site",
    "Study",
    "StudyMembership",
    "StudyMembershipSite",
    "StudyQualitySettings",
    "Submission",
    "SubmissionTask",
    "TaskScore",
    "User",
    "UserSession",
]
