"""Demo data for the embedded default: never in production."""

from __future__ import annotations

import uuid

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
from server.modules.builtin import load_builtins
from server.participants import service as participants_service
from server.participants.models import Participant
from server.participants.schemas import ContactIn, ParticipantCreate, ParticipantRef
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
                    ),
                )
                participants.append(participant)
            await seed_demo_batteries(db, study_id=study.id)
            await seed_demo_consent(db, study_id=study.id, participants=participants)
    finally:
        await engine.dispose()
    print(
        f"demo study {DEMO_STUDY_CODE} created: 2 sites, 20 participants, "
        f"batteries {', '.join(key for key, _, _ in DEMO_BATTERIES)}, "
        "consent v1 signed by every participant"
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
