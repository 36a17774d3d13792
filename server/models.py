"""Every ORM model, imported once so metadata is complete (Alembic, tests)."""

from server.assessment_sessions.models import AssessmentSession
from server.audit.models import AuditChainHead, AuditEntry
from server.batteries.models import Battery, BatteryModule
from server.consent.models import ConsentDocument, ConsentRecord, ConsentWithdrawal
from server.coordinator_tasks.models import CoordinatorTask
from server.core.models import Base
from server.exports.models import (
    Export,
    ExportQualityFlag,
    ExportSubmission,
    RedcapPush,
    RedcapPushSubmission,
)
from server.item_banks.models import ItemBank
from server.message_templates.models import MessageTemplate
from server.modules.models import Module
from server.outbox.models import OutboxEvent
from server.participant_auth.models import AccessCode, ParticipantLogin
from server.participants.models import Participant, ParticipantContact
from server.redcap.models import (
    RedcapConnection,
    RedcapMapping,
    RedcapParticipantImport,
    RedcapSyncState,
)
from server.reminders.models import DispatchWatermark, ReminderMessage, ReminderRule
from server.reports.models import Report
from server.schedules.models import (
    ScheduleAssignment,
    ScheduleProtocol,
    ScheduleVisit,
    VisitOccurrence,
)
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
    "ConsentDocument",
    "ConsentRecord",
    "ConsentWithdrawal",
    "CoordinatorTask",
    "DispatchWatermark",
    "Export",
    "ExportQualityFlag",
    "ExportSubmission",
    "ItemBank",
    "MessageTemplate",
    "Module",
    "OutboxEvent",
    "Participant",
    "ParticipantContact",
    "ParticipantLogin",
    "QualityCheck",
    "RedcapConnection",
    "RedcapMapping",
    "RedcapParticipantImport",
    "RedcapPush",
    "RedcapPushSubmission",
    "RedcapSyncState",
    "ReminderMessage",
    "ReminderRule",
    "Report",
    "ScheduleAssignment",
    "ScheduleProtocol",
    "ScheduleVisit",
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
    "VisitOccurrence",
]
