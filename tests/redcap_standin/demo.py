"""Demo projects: a classic and a longitudinal one with a repeating `cognitive_session`."""

from __future__ import annotations

from .fields import Field, field
from .project import Arm, Dag, Event, FormEvent, ProjectModel, Repeating, Token, new_token

ENROLLMENT = "enrollment"
SESSION = "cognitive_session"


def demo_metadata() -> list[Field]:
    return [
        field("record_id", ENROLLMENT, "Record ID"),
        field("enrol_info", ENROLLMENT, "Participant enrolment", "descriptive"),
        field("enrol_date", ENROLLMENT, "Enrolment date", validation="date_ymd"),
        field(
            "age",
            ENROLLMENT,
            "Age (years)",
            validation="integer",
            minimum="18",
            maximum="110",
            annotation="@FORCE-MINMAX",
        ),
        field(
            "weight_kg", ENROLLMENT, "Weight (kg)", validation="number", minimum="20", maximum="300"
        ),
        field("sex", ENROLLMENT, "Sex", "radio", choices="1, Female | 2, Male | 3, Other"),
        field("consent", ENROLLMENT, "Consent given", "yesno"),
        field(
            "conditions",
            ENROLLMENT,
            "Conditions",
            "checkbox",
            choices="1, Hypertension | 2, Diabetes | 3, Depression | 99, None of these",
        ),
        field("contact_email", ENROLLMENT, "Contact e-mail", validation="email"),
        field("session_date", SESSION, "Session date", validation="date_ymd"),
        field("session_started_at", SESSION, "Session start", validation="datetime_ymd"),
        field("srt_mean_rt_ms", SESSION, "SRT mean reaction time (ms)", validation="number"),
        field(
            "srt_n_trials",
            SESSION,
            "SRT trials",
            validation="integer",
            minimum="1",
            annotation="@FORCE-MINMAX",
        ),
        field("session_notes", SESSION, "Notes", "notes"),
    ]


def demo_tokens() -> list[Token]:
    return [
        Token(new_token(), username="sync_user"),
        Token(new_token(), username="reader", can_import=False, can_delete=False),
    ]


def demo_dags() -> list[Dag]:
    return [Dag("Site A", "site_a", 101), Dag("Site B", "site_b", 102)]


def classic_project(title: str = "Metricis demo (classic)") -> ProjectModel:
    return ProjectModel(
        project_title=title,
        project_id=101,
        metadata=demo_metadata(),
        tokens=demo_tokens(),
        repeating=[Repeating(SESSION)],
        dags=demo_dags(),
        form_labels={ENROLLMENT: "Enrollment", SESSION: "Cognitive Session"},
    )


def longitudinal_project(title: str = "Metricis demo (longitudinal)") -> ProjectModel:
    events = [
        Event("baseline_arm_1", "Baseline", 1, event_id=41),
        Event("month_6_arm_1", "Month 6", 1, event_id=42, days_offset=182),
    ]
    return ProjectModel(
        project_title=title,
        project_id=102,
        metadata=demo_metadata(),
        tokens=demo_tokens(),
        arms=[Arm(1, "Arm 1")],
        events=events,
        form_event_mapping=[
            FormEvent("baseline_arm_1", ENROLLMENT),
            FormEvent("baseline_arm_1", SESSION),
            FormEvent("month_6_arm_1", SESSION),
        ],
        repeating=[Repeating(SESSION, "baseline_arm_1"), Repeating(SESSION, "month_6_arm_1")],
        dags=demo_dags(),
        form_labels={ENROLLMENT: "Enrollment", SESSION: "Cognitive Session"},
    )
