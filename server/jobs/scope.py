"""Which jobs a member sees: site scope (server.studies.access) applied to jobs.

A job (an outbox row) of a study names its submission in subject_id; the submission's
participant gives its site. A whole-study member sees every job of the study; a site-scoped
one only those whose submission is at one of their sites, and none that names no submission.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.outbox.models import OutboxEvent
from server.participants.models import Participant
from server.studies.models import StudyMembership, StudyMembershipSite
from server.submissions.models import Submission


def visible_to(user_id: uuid.UUID) -> ColumnElement[bool]:
    """The jobs this (non-admin) user's memberships cover; jobs of no study are admins' only."""
    whole_study = select(StudyMembership.study_id).where(
        StudyMembership.user_id == user_id,
        ~exists().where(StudyMembershipSite.membership_id == StudyMembership.id),
    )
    at_their_sites = (
        select(Submission.id)
        .join(Participant, Participant.id == Submission.participant_id)
        .join(StudyMembershipSite, StudyMembershipSite.site_id == Participant.site_id)
        .join(StudyMembership, StudyMembership.id == StudyMembershipSite.membership_id)
        .where(StudyMembership.user_id == user_id)
    )
    return or_(OutboxEvent.study_id.in_(whole_study), OutboxEvent.subject_id.in_(at_their_sites))


async def site_of(db: AsyncSession, job: OutboxEvent) -> uuid.UUID | None:
    """The site of the job's submission; None when it names none."""
    if job.subject_id is None:
        return None
    return await db.scalar(
        select(Participant.site_id)
        .join(Submission, Submission.participant_id == Participant.id)
        .where(Submission.id == job.subject_id)
    )
