"""Message templates as Jinja2 text, in a sandbox: what each kind offers, the check at save,
rendering, and the context a participant's message is rendered with.

A template is written by study staff and rendered by the reminder worker, so it is treated as
untrusted code twice over. At save (check) it may hold only placeholders, literals, a few
string filters and if/else: no attribute or item access, no calls, no loops, no arithmetic;
nothing that reaches into Python objects or could spend the worker's memory and time. At
render the sandbox refuses the same things again, in case a row was written some other way.
No placeholder carries PHI: a participant is their code, never a name, email or phone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from server.core.errors import Unprocessable
from server.message_templates.models import TemplateKind

_EVERY_KIND = frozenset({"participant_code", "app_link", "study_name"})
_VISIT = frozenset({"visit_label", "window_start", "window_end"})

PLACEHOLDERS: dict[TemplateKind, frozenset[str]] = {
    TemplateKind.invitation: _EVERY_KIND,
    TemplateKind.reminder: _EVERY_KIND | _VISIT,
    TemplateKind.missed_visit: _EVERY_KIND | _VISIT,
    TemplateKind.consent_update: _EVERY_KIND,
}

# What a template may be made of. Anything else (Getattr, Getitem, Call, For, Assign, Macro,
# Include, arithmetic...) is refused at save: a message needs none of it.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Filter,
    nodes.Keyword,
    nodes.If,
    nodes.CondExpr,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
)
# String filters whose output is bounded by their input.
_ALLOWED_FILTERS = frozenset(
    {"upper", "lower", "title", "capitalize", "trim", "truncate", "default", "d"}
)

_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


class TemplateInvalid(Unprocessable):
    error_code = "template_invalid"
    message = "The template does not parse, or uses something its kind does not offer."


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def _problem(field: str, line: int | None, message: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "line": line, "message": message, **extra}


def _problems(kind: TemplateKind, field: str, source: str) -> list[dict[str, Any]]:
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as exc:
        return [_problem(field, exc.lineno, exc.message or str(exc))]
    problems: list[dict[str, Any]] = []
    for node in ast.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            what = type(node).__name__
            allowed = "use placeholders, filters and if/else only"
            problems.append(_problem(field, node.lineno, f"{what} is not allowed: {allowed}."))
        elif isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
            problems.append(_problem(field, node.lineno, f"Filter {node.name!r} is not allowed."))
    unknown = sorted(meta.find_undeclared_variables(ast) - PLACEHOLDERS[kind])
    if unknown:
        names = ", ".join(unknown)
        message = f"Unknown placeholder(s) for a {kind.value} message: {names}"
        problems.append(_problem(field, None, message, unknown=unknown))
    return problems


def check(kind: TemplateKind, subject: str, body: str) -> None:
    """Refuse (422 template_invalid) a subject or body that does not parse, uses a
    placeholder its kind does not offer, or anything beyond placeholders, filters and if."""
    problems = _problems(kind, "subject", subject) + _problems(kind, "body", body)
    if problems:
        raise TemplateInvalid(
            details={"placeholders": sorted(PLACEHOLDERS[kind]), "problems": problems}
        )


@lru_cache(maxsize=512)
def _compiled(kind: TemplateKind, source: str) -> Template:
    problems = _problems(kind, "template", source)
    if problems:
        details = {"placeholders": sorted(PLACEHOLDERS[kind]), "problems": problems}
        raise TemplateInvalid(details=details)
    return _env.from_string(source)


def render(kind: TemplateKind, subject: str, body: str, context: Mapping[str, str]) -> Rendered:
    """The message. The context must hold every placeholder of the kind (context_for gives
    them all); other keys are ignored. Raises TemplateInvalid if the template is refused."""
    missing = PLACEHOLDERS[kind] - context.keys()
    if missing:
        raise ValueError(f"context lacks {sorted(missing)}")
    values = {name: context[name] for name in PLACEHOLDERS[kind]}
    try:
        rendered_subject = _compiled(kind, subject).render(values)
        rendered_body = _compiled(kind, body).render(values)
    except TemplateError as exc:  # SecurityError and UndefinedError among them
        raise TemplateInvalid(details={"problems": [{"message": str(exc)}]}) from None
    # One line: an email subject or push title never carries a line break.
    return Rendered(subject=" ".join(rendered_subject.split()), body=rendered_body)


# --- local times as text ------------------------------------------------------------------

_DAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "de": ("Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."),
}
_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "de": ("Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sep.", "Okt.", "Nov.",
           "Dez."),
}  # fmt: skip


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # A zone this system does not know still gives a message, in UTC and saying so.
        return ZoneInfo("UTC")


def local_text(at: datetime, timezone: str, language: str | None) -> str:
    """'Mon 7 Dec 2026, 09:00 CET' ('Mo., 7. Dez. 2026, 09:00 CET' in German): the wall
    clock in the zone, with the zone's abbreviation, so DST shows as CET or CEST."""
    if at.tzinfo is None:
        raise ValueError("local_text takes an aware datetime")
    local = at.astimezone(_zone(timezone))
    lang = (language or "en").split("-")[0].lower()
    if lang == "de":
        day, month = _DAYS["de"][local.weekday()], _MONTHS["de"][local.month - 1]
        return f"{day}, {local.day}. {month} {local.year}, {local:%H:%M} {local:%Z}"
    day, month = _DAYS["en"][local.weekday()], _MONTHS["en"][local.month - 1]
    return f"{day} {local.day} {month} {local.year}, {local:%H:%M} {local:%Z}"


def context_for(
    *,
    participant_code: str,
    study_name: str,
    app_link: str,
    timezone: str,
    window_start: datetime | None,
    window_end: datetime | None,
    language: str | None,
    visit_label: str = "",
) -> dict[str, str]:
    """Every placeholder any kind offers, for one participant: window times (UTC in) as text
    in their zone and language; an absent window or label is empty text."""

    def text(at: datetime | None) -> str:
        return "" if at is None else local_text(at, timezone, language)

    return {
        "participant_code": participant_code,
        "study_name": study_name,
        "app_link": app_link,
        "visit_label": visit_label,
        "window_start": text(window_start),
        "window_end": text(window_end),
    }
