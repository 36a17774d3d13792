"""Message templates: saved only once they check, rendered in a sandbox, previewed with a
participant's real values, and the fallback from the participant's language to built-in text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient
from jinja2.exceptions import SecurityError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit.models import AuditAction
from server.core.clock import clock
from server.core.config import Settings
from server.message_templates import defaults, render, service
from server.message_templates.models import MessageTemplate, TemplateKind
from server.studies.models import Site, Study, StudyRole
from tests import factories
from tests import ingest_factories as ingest
from tests import schedule_factories as sched
from tests.audit_helpers import only_entry

URL = "/api/templates"
REMINDER = {
    "kind": "reminder",
    "language": "en",
    "subject": "{{ study_name }}: {{ visit_label }}",
    "body": "Hello {{ participant_code }}, your visit opens {{ window_start }}. {{ app_link }}",
}


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.set(datetime(2026, 12, 6, 12, tzinfo=UTC))
    yield
    clock.reset()


async def _member(
    db: AsyncSession, settings: Settings, study: Study, role: StudyRole, sites: Sequence[Site] = ()
) -> dict[str, str]:
    user = await factories.create_user(db)
    await factories.add_member(db, study, user, role, sites=sites)
    return await factories.auth_headers(db, settings, user)


async def _study(db: AsyncSession, settings: Settings) -> tuple[Study, Site, dict[str, str]]:
    study = await factories.create_study(db)
    site = await factories.create_site(db, study)
    return study, site, await _member(db, settings, study, StudyRole.coordinator)


async def _count(db: AsyncSession, study: Study) -> int:
    query = select(func.count()).where(MessageTemplate.study_id == study.id)
    return int(await db.scalar(query) or 0)


async def test_a_coordinator_creates_lists_edits_and_deletes_a_template(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, headers = await _study(db, settings)
    created = await client.post(
        URL, params={"study_id": str(study.id)}, json=REMINDER, headers=headers
    )
    assert created.status_code == 201, created.text
    template = created.json()
    assert template["subject"] == REMINDER["subject"]
    assert "window_start" in template["placeholders"]
    german = {
        **REMINDER,
        "language": "de",
        "kind": "invitation",
        "subject": "Hallo",
        "body": "{{ participant_code }}",
    }
    assert (
        await client.post(URL, params={"study_id": str(study.id)}, json=german, headers=headers)
    ).status_code == 201

    listed = await client.get(URL, params={"study_id": str(study.id)}, headers=headers)
    assert [(t["kind"], t["language"]) for t in listed.json()] == [
        ("invitation", "de"),
        ("reminder", "en"),
    ]
    only_reminders = await client.get(
        URL, params={"study_id": str(study.id), "kind": "reminder"}, headers=headers
    )
    assert [t["id"] for t in only_reminders.json()] == [template["id"]]

    patched = await client.patch(
        f"{URL}/{template['id']}", json={"body": "New {{ app_link }}"}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["subject"], patched.json()["body"]) == (
        REMINDER["subject"],
        "New {{ app_link }}",
    )
    fetched = await client.get(f"{URL}/{template['id']}", headers=headers)
    assert fetched.json()["body"] == "New {{ app_link }}"

    assert (await client.delete(f"{URL}/{template['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{URL}/{template['id']}", headers=headers)).status_code == 404
    for action in (
        AuditAction.template_created,
        AuditAction.template_updated,
        AuditAction.template_deleted,
    ):
        entry = await only_entry(db, action, template["id"])
        assert (entry.study_id, entry.summary["kind"]) == (study.id, "reminder")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"body": "Dear {{ first_name }}"}, "first_name"),
        ({"kind": "invitation"}, "visit_label"),  # an invitation has no visit
        ({"subject": "{{ email }}"}, "email"),
    ],
)
async def test_an_unknown_placeholder_is_refused_and_nothing_is_saved(
    client: AsyncClient, db: AsyncSession, settings: Settings, change: dict[str, str], expected: str
) -> None:
    study, _, headers = await _study(db, settings)
    response = await client.post(
        URL, params={"study_id": str(study.id)}, json={**REMINDER, **change}, headers=headers
    )
    assert response.status_code == 422, response.text
    envelope = response.json()
    assert envelope["error_code"] == "template_invalid"
    assert any(expected in p.get("unknown", []) for p in envelope["details"]["problems"])
    assert "participant_code" in envelope["details"]["placeholders"]
    assert await _count(db, study) == 0


async def test_a_syntax_error_names_its_line_and_an_edit_with_one_changes_nothing(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, headers = await _study(db, settings)
    broken = {**REMINDER, "body": "Hello\n{{ participant_code }\nbye"}
    response = await client.post(
        URL, params={"study_id": str(study.id)}, json=broken, headers=headers
    )
    assert response.status_code == 422
    [problem] = response.json()["details"]["problems"]
    assert (problem["field"], problem["line"]) == ("body", 2)
    assert await _count(db, study) == 0

    created = await client.post(
        URL, params={"study_id": str(study.id)}, json=REMINDER, headers=headers
    )
    template_id = created.json()["id"]
    edit = await client.patch(f"{URL}/{template_id}", json={"subject": "{% if %}"}, headers=headers)
    assert (edit.status_code, edit.json()["error_code"]) == (422, "template_invalid")
    assert (await client.get(f"{URL}/{template_id}", headers=headers)).json()[
        "subject"
    ] == REMINDER["subject"]


TRICKS = [
    "{{ participant_code.__class__ }}",
    "{{ participant_code['__class__'] }}",
    "{{ participant_code|attr('__class__') }}",
    "{{ participant_code.upper() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% for i in range(99999) %}{{ app_link }}{% endfor %}",
    "{{ participant_code * 1000000000 }}",
    "{% set x = participant_code %}{{ x }}",
]


@pytest.mark.parametrize("trick", TRICKS)
async def test_the_sandbox_refuses_tricks_at_save(
    client: AsyncClient, db: AsyncSession, settings: Settings, trick: str
) -> None:
    study, _, headers = await _study(db, settings)
    response = await client.post(
        URL, params={"study_id": str(study.id)}, json={**REMINDER, "body": trick}, headers=headers
    )
    assert (response.status_code, response.json()["error_code"]) == (422, "template_invalid")
    assert await _count(db, study) == 0


def _context(**overrides: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "participant_code": "P-001",
        "study_name": "Sleep",
        "app_link": "https://app.example.org/",
        "timezone": "UTC",
        "window_start": None,
        "window_end": None,
        "language": None,
    }
    return render.context_for(**{**values, **overrides})


@pytest.mark.parametrize("trick", TRICKS[:5])
def test_a_trick_written_past_the_check_is_refused_at_render(trick: str) -> None:
    with pytest.raises(render.TemplateInvalid):
        render.render(TemplateKind.reminder, "s", trick, _context())


def test_the_environment_itself_is_a_sandbox() -> None:
    # The second line of defence, should a template reach the engine unchecked.
    template = render._env.from_string("{{ code.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError):
        template.render(code="P-001")


async def test_a_duplicate_kind_and_language_is_409(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, _, headers = await _study(db, settings)
    params = {"study_id": str(study.id)}
    first = {**REMINDER, "language": "pt-BR"}
    assert (await client.post(URL, params=params, json=first, headers=headers)).status_code == 201
    again = await client.post(
        URL, params=params, json={**first, "language": "pt-br"}, headers=headers
    )
    assert (again.status_code, again.json()["error_code"]) == (409, "template_exists")
    assert await _count(db, study) == 1


async def test_a_viewer_reads_but_cannot_write_and_a_site_scoped_coordinator_cannot_either(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study, site, headers = await _study(db, settings)
    params = {"study_id": str(study.id)}
    created = (await client.post(URL, params=params, json=REMINDER, headers=headers)).json()
    viewer = await _member(db, settings, study, StudyRole.viewer)
    scoped = await _member(db, settings, study, StudyRole.coordinator, sites=[site])

    other = {**REMINDER, "language": "fr"}
    denied = await client.post(URL, params=params, json=other, headers=viewer)
    assert (denied.status_code, denied.json()["error_code"]) == (403, "forbidden")
    denied = await client.post(URL, params=params, json=other, headers=scoped)
    assert (denied.status_code, denied.json()["error_code"]) == (403, "site_scoped")
    patch = await client.patch(f"{URL}/{created['id']}", json={"body": "x"}, headers=viewer)
    assert patch.status_code == 403
    for reader in (viewer, scoped):
        listed = await client.get(URL, params=params, headers=reader)
        assert [t["id"] for t in listed.json()] == [created["id"]]
    assert await _count(db, study) == 1


async def test_another_studys_template_and_participant_are_404(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    study_a, _, headers_a = await _study(db, settings)
    study_b, site_b, headers_b = await _study(db, settings)
    theirs = (
        await client.post(
            URL, params={"study_id": str(study_b.id)}, json=REMINDER, headers=headers_b
        )
    ).json()
    for method, body in (("GET", None), ("PATCH", {"body": "x"}), ("DELETE", None)):
        response = await client.request(
            method, f"{URL}/{theirs['id']}", json=body, headers=headers_a
        )
        assert (response.status_code, response.json()["error_code"]) == (404, "not_found")

    mine = (
        await client.post(
            URL, params={"study_id": str(study_a.id)}, json=REMINDER, headers=headers_a
        )
    ).json()
    their_participant = await factories.create_participant(db, site_b)
    preview = await client.post(
        f"{URL}/{mine['id']}/preview",
        json={"participant_id": str(their_participant.id)},
        headers=headers_a,
    )
    assert (preview.status_code, preview.json()["message"]) == (404, "No such participant.")


async def test_preview_renders_the_participants_code_and_next_window_in_their_zone(
    client: AsyncClient, db: AsyncSession, settings: Settings, frozen: None
) -> None:
    study, site, headers = await _study(db, settings)
    other_site = await factories.create_site(db, study)
    battery = await ingest.create_battery(db, study, await ingest.standard_modules(db))
    protocol, visits = await sched.create_protocol(db, study, battery)
    participant = await factories.create_participant(db, site, code="P-042")
    participant.timezone, participant.language = "Europe/Berlin", "de"
    await db.flush()
    # 08:00 UTC in January is 09:00 in Berlin (CET).
    await sched.create_occurrence(
        db, participant, protocol, visits[0], start=datetime(2027, 1, 11, 8, tzinfo=UTC), hours=12
    )
    created = (
        await client.post(URL, params={"study_id": str(study.id)}, json=REMINDER, headers=headers)
    ).json()

    preview = await client.post(
        f"{URL}/{created['id']}/preview",
        json={"participant_id": str(participant.id)},
        headers=headers,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "subject": "Study: Baseline",
        "body": "Hello P-042, your visit opens Mo., 11. Jan. 2027, 09:00 CET. "
        + settings.PARTICIPANT_APP_URL,
    }

    # A site-scoped member previews with their own site's participants only.
    scoped = await _member(db, settings, study, StudyRole.coordinator, sites=[site])
    own = await client.post(
        f"{URL}/{created['id']}/preview",
        json={"participant_id": str(participant.id)},
        headers=scoped,
    )
    assert own.status_code == 200
    elsewhere = await factories.create_participant(db, other_site)
    refused = await client.post(
        f"{URL}/{created['id']}/preview", json={"participant_id": str(elsewhere.id)}, headers=scoped
    )
    assert refused.status_code == 404


async def test_template_for_falls_back_language_by_language_then_to_built_in_text(
    db: AsyncSession,
) -> None:
    study = await factories.create_study(db)
    kind = TemplateKind.reminder

    async def add(language: str) -> None:
        db.add(
            MessageTemplate(
                study_id=study.id,
                kind=kind,
                language=language,
                subject=f"subject {language}",
                body=f"body {language}",
            )
        )
        await db.flush()

    async def subject(language: str | None) -> str:
        found = await service.template_for(db, study_id=study.id, kind=kind, language=language)
        return found[0]

    # Nothing of the study's: built-in text, in the language if there is one, else English.
    assert await subject("de-AT") == defaults.DEFAULTS["de"][kind][0]
    assert await subject("pt-BR") == defaults.DEFAULTS["en"][kind][0]
    assert await subject(None) == defaults.DEFAULTS["en"][kind][0]
    await add("en")
    assert await subject("pt-BR") == "subject en"
    assert await subject("de") == "subject en"  # the study's English before built-in German
    await add("pt")
    assert await subject("pt-BR") == "subject pt"
    await add("pt-BR")
    assert await subject("pt-br") == "subject pt-BR"
    assert await subject("pt-PT") == "subject pt"
    # Another kind of the study's is not a fallback.
    found = await service.template_for(
        db, study_id=study.id, kind=TemplateKind.invitation, language="pt-BR"
    )
    assert found == defaults.DEFAULTS["en"][TemplateKind.invitation]


@pytest.mark.parametrize(
    ("zone", "start", "end", "start_text", "end_text"),
    [
        # Berlin springs forward at 02:00 CET on 29 March 2026, to 03:00 CEST.
        ("Europe/Berlin", datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
         datetime(2026, 3, 29, 8, tzinfo=UTC),
         "Sun 29 Mar 2026, 01:30 CET", "Sun 29 Mar 2026, 10:00 CEST"),
        # New York springs forward at 02:00 EST on 8 March 2026, to 03:00 EDT.
        ("America/New_York", datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
         datetime(2026, 3, 8, 13, tzinfo=UTC),
         "Sun 8 Mar 2026, 01:30 EST", "Sun 8 Mar 2026, 09:00 EDT"),
    ],
)  # fmt: skip
def test_context_for_gives_local_times_across_the_dst_change(
    zone: str, start: datetime, end: datetime, start_text: str, end_text: str
) -> None:
    context = _context(timezone=zone, window_start=start, window_end=end)
    assert (context["window_start"], context["window_end"]) == (start_text, end_text)
    rendered = render.render(
        TemplateKind.reminder, *defaults.default_for(TemplateKind.reminder, "en"), context
    )
    assert start_text in rendered.body and end_text in rendered.body


@pytest.mark.parametrize("language", sorted(defaults.DEFAULTS))
@pytest.mark.parametrize("kind", list(TemplateKind))
def test_every_built_in_text_checks_and_renders(kind: TemplateKind, language: str) -> None:
    subject, body = defaults.DEFAULTS[language][kind]
    render.check(kind, subject, body)
    context = _context(window_start=datetime(2026, 12, 7, 8, tzinfo=UTC), visit_label="Week 1")
    rendered = render.render(kind, subject, body, context)
    assert "Sleep" in rendered.subject and "\n" not in rendered.subject
    assert "https://app.example.org/" in rendered.body
