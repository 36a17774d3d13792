"""Demo data for the embedded default: never in production."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.batteries import service as batteries_service
from server.batteries.models import Battery
from server.batteries.schemas import BatteryCreate
from server.consent import documents as consent_documents
from server.consent import service as consent_service
from server.consent.models import AttestationKind
from server.consent.schemas import Attestation, ConsentDocumentCreate, ConsentSign
from server.core.config import Settings
from server.core.db import create_engine, create_sessionmaker
from server.demo.sessions import (
    FLAGGED,
    QUARANTINED,
    WITHDRAWN,
    enrolled_days_ago,
    seed_demo_sessions,
)
from server.modules.builtin import load_builtins
from server.participants import service as participants_service
from server.participants.models import Participant
from server.participants.schemas import ContactIn, ParticipantCreate, ParticipantRef
from server.reminders.models import ReminderRule, Trigger
from server.schedules import protocols as protocols_service
from server.schedules.schemas import ProtocolCreate, ProtocolPublish, VisitIn
from server.studies import service as studies_service
from server.studies.access import WHOLE_STUDY
from server.studies.models import Study, StudyRole
from server.studies.schemas import SiteCreate, StudyCreate
from server.users import service as users_service
from server.users.schemas import UserCreate

DEMO_STUDY_CODE = "DEMO"
# The demo study's published batteries: key, name, built-in modules in visit order.
DEMO_BATTERIES = [
    ("standard_visit", "Standard visit", ("simple_rt", "choice_rt", "cpt")),
    ("full_visit", "Full visit", ("simple_rt", "choice_rt", "cpt", "digit_span", "mood9")),
]
# Fixed so the README can name them; seed-demo refuses to run in production.
DEMO_LOGINS = [
    ("admin@demo.metricis.org", "walnut-orbit-7421", None),
    ("coordinator@demo.metricis.org", "cedar-lantern-3958", StudyRole.coordinator),
    ("researcher@demo.metricis.org", "maple-comet-6180", StudyRole.researcher),
    ("london.coordinator@demo.metricis.org", "harbor-quill-5207", StudyRole.coordinator),
]
# Logins whose membership is limited to some sites (by code); the others see the whole study.
DEMO_SITE_SCOPES = {"london.coordinator@demo.metricis.org": ("LON",)}


async def seed_demo(settings: Settings, *, if_empty: bool = False) -> None:
    if settings.ENVIRONMENT == "production":
        raise SystemExit("seed-demo refuses to run with ENVIRONMENT=production")
    began = time.perf_counter()
    now = datetime.now(UTC)
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            if await db.scalar(select(Study.id).where(Study.code == DEMO_STUDY_CODE)):
                if if_empty:
                    print("demo data already present")
                    _print_logins()
                    return
                raise SystemExit("demo study already exists")
            study = await studies_service.create_study(
                db,
                study_in=StudyCreate(
                    code=DEMO_STUDY_CODE,
                    name="Metricis demo study",
                    description="Two sites, twenty participants, for trying the platform.",
                ),
            )
            sites = [
                await studies_service.create_site(
                    db,
                    study_id=study.id,
                    site_in=SiteCreate(code=code, name=name, timezone=tz),
                )
                for code, name, tz in (
                    ("LON", "London clinic", "Europe/London"),
                    ("NYC", "New York clinic", "America/New_York"),
                )
            ]
            for email, password, role in DEMO_LOGINS:
                user = await users_service.create(
                    db,
                    settings,
                    user_in=UserCreate(
                        email=email,
                        password=password,
                        is_admin=role is None,
                        display_name=email.split("@")[0].title(),
                    ),
                )
                if role is not None:
                    scope = DEMO_SITE_SCOPES.get(email, ())
                    await studies_service.add_membership(
                        db,
                        study_id=study.id,
                        user_id=user.id,
                        role=role,
                        site_ids=[site.id for site in sites if site.code in scope],
                    )
            participants = []
            for n in range(1, 21):
                site = sites[n % 2]
                participant = await participants_service.create(
                    db,
                    study_id=study.id,
                    participant_in=ParticipantCreate(
                        site_id=site.id,
                        participant_code=f"{site.code}-{n:03d}",
                        timezone=site.timezone,
                        contact=ContactIn(email=f"participant{n:03d}@example.org"),
                        enrolled_at=now - timedelta(days=enrolled_days_ago(n)),
                    ),
                    settings=settings,
                )
                participants.append(participant)
            batteries = await seed_demo_batteries(db, study_id=study.id)
            await seed_demo_schedule(db, study_id=study.id, batteries=batteries)
            await seed_demo_consent(db, study_id=study.id, participants=participants)
            history = await seed_demo_sessions(
                db, study_id=study.id, participants=participants, batteries=batteries, now=now
            )
    finally:
        await engine.dispose()
    print(
        f"demo study {DEMO_STUDY_CODE} created: 2 sites, 20 participants, "
        f"batteries {', '.join(key for key, _, _ in DEMO_BATTERIES)}, "
        "consent v1 signed by every participant, a visit protocol with reminder rules"
    )
    print(
        f"  their past visits: {history.sessions} sessions ({history.accepted} accepted, "
        f"{history.quarantined} quarantined: {QUARANTINED}), {history.missed} missed; "
        f"{FLAGGED} has a flagged session, {WITHDRAWN} withdrew (no data use); "
        f"the worker scores them ({time.perf_counter() - began:.1f} s)"
    )
    _print_logins()


async def seed_demo_batteries(db: AsyncSession, *, study_id: uuid.UUID) -> list[Battery]:
    """The built-in modules (loaded if missing) and the demo study's published batteries."""
    builtins = await load_builtins(db)
    batteries = []
    for key, name, module_keys in DEMO_BATTERIES:
        battery, _ = await batteries_service.create(
            db,
            study_id=study_id,
            battery_in=BatteryCreate(
                key=key, name=name, module_ids=[builtins[k].id for k in module_keys]
            ),
        )
        battery, _ = await batteries_service.publish(db, battery=battery)
        batteries.append(battery)
    return batteries


async def seed_demo_schedule(
    db: AsyncSession, *, study_id: uuid.UUID, batteries: list[Battery]
) -> None:
    """Baseline, week 1, week 4 and week 12 at 09:00 local (the full battery at baseline, week
    4 and week 12, the standard one at week 1), and reminders: at window open, 4 hours before
    it closes (email, else SMS), and after a missed visit. With the default `log` providers
    the worker logs each message it would send."""
    standard, full = batteries
    visits = [
        VisitIn(key=key, label=label, offset_days=days, window_after_minutes=36 * 60,
                battery_id=battery.id)
        for key, label, days, battery in (("baseline", "Baseline", 0, full),
                                          ("week1", "Week 1", 7, standard),
                                          ("week4", "Week 4", 28, full),
                                          ("week12", "Week 12", 84, full))
    ]  # fmt: skip
    created = await protocols_service.create(
        db, study_id=study_id, protocol_in=ProtocolCreate(name="Demo visits", visits=visits)
    )
    protocol = await protocols_service.get(db, created.id)
    await protocols_service.publish(db, protocol=protocol, publish_in=ProtocolPublish())
    for visit in created.visits:
        for trigger, hours, channels in (
            (Trigger.window_open, 0, ["email"]),
            (Trigger.before_close, 4, ["email", "sms"]),
            (Trigger.missed, 0, ["email"]),
        ):
            db.add(ReminderRule(study_id=study_id, visit_id=visit.id, trigger=trigger,
                                hours_before_close=hours, channels=channels))  # fmt: skip
    await db.flush()


DEMO_CONSENT_TEXT = (
    "This is the demo study's consent document, for trying the platform.\n\n"
    "You are asked to take part in short computerised tasks of attention and reaction time, "
    "and to answer a brief mood questionnaire, at each visit. Taking part is voluntary: you "
    "may withdraw at any time, without giving a reason, and choose what your data may still "
    "be used for.\n\n"
    "Your results are stored under a study code, never with your name."
)


async def seed_demo_consent(
    db: AsyncSession, *, study_id: uuid.UUID, participants: list[Participant]
) -> None:
    """Consent v1, published, and signed by every demo participant: without it their app
    could start no session (server.consent gates POST /api/session/start)."""
    document = await consent_documents.create_document(
        db,
        study_id=study_id,
        document_in=ConsentDocumentCreate(
            title="Consent to take part in the Metricis demo study", body=DEMO_CONSENT_TEXT
        ),
        scope=WHOLE_STUDY,
        created_by=None,
    )
    document = await consent_documents.publish(db, document=document)
    for participant in participants:
        await consent_service.sign(
            db,
            participant=ParticipantRef.model_validate(participant, from_attributes=True),
            sign_in=ConsentSign(
                document_id=document.id,
                attestation=Attestation(kind=AttestationKind.checkbox, value="I agree (demo data)"),
                app_version="demo",
            ),
            ip=None,
        )


def _print_logins() -> None:
    print("demo logins (email / password / role):")
    for email, password, role in DEMO_LOGINS:
        scope = DEMO_SITE_SCOPES.get(email)
        at = f" (site {', '.join(scope)} only)" if scope else ""
        print(f"  {email} / {password} / {role.value if role else 'admin'}{at}")
