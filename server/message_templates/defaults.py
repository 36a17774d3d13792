"""Built-in texts, so reminders work before a study writes any template: English and German,
short, with no PHI (the participant is their code). tests check each against its kind."""

from __future__ import annotations

from server.message_templates.models import TemplateKind

DEFAULT_LANGUAGE = "en"

# language -> kind -> (subject, body)
DEFAULTS: dict[str, dict[TemplateKind, tuple[str, str]]] = {
    "en": {
        TemplateKind.invitation: (
            "Your invitation to {{ study_name }}",
            "You have been invited to take part in {{ study_name }}.\n"
            "Your participant code is {{ participant_code }}.\n"
            "Open the study app: {{ app_link }}",
        ),
        TemplateKind.reminder: (
            "Reminder: {{ visit_label }} for {{ study_name }}",
            "Your visit {{ visit_label }} is open from {{ window_start }} "
            "until {{ window_end }}.\n"
            "Open the study app: {{ app_link }}",
        ),
        TemplateKind.missed_visit: (
            "Missed visit: {{ visit_label }} for {{ study_name }}",
            "Your visit {{ visit_label }} closed at {{ window_end }} without being completed.\n"
            "If you have questions, please contact your study team.\n"
            "Study app: {{ app_link }}",
        ),
        TemplateKind.consent_update: (
            "Updated consent for {{ study_name }}",
            "The consent information for {{ study_name }} has changed.\n"
            "Please review it in the study app before your next session: {{ app_link }}",
        ),
    },
    "de": {
        TemplateKind.invitation: (
            "Ihre Einladung zu {{ study_name }}",
            "Sie wurden eingeladen, an {{ study_name }} teilzunehmen.\n"
            "Ihr Teilnehmercode lautet {{ participant_code }}.\n"
            "Zur Studien-App: {{ app_link }}",
        ),
        TemplateKind.reminder: (
            "Erinnerung: {{ visit_label }} für {{ study_name }}",
            "Ihr Termin {{ visit_label }} ist von {{ window_start }} "
            "bis {{ window_end }} geöffnet.\n"
            "Zur Studien-App: {{ app_link }}",
        ),
        TemplateKind.missed_visit: (
            "Verpasster Termin: {{ visit_label }} für {{ study_name }}",
            "Ihr Termin {{ visit_label }} wurde am {{ window_end }} geschlossen, ohne dass er "
            "abgeschlossen wurde.\n"
            "Bei Fragen wenden Sie sich bitte an Ihr Studienteam.\n"
            "Studien-App: {{ app_link }}",
        ),
        TemplateKind.consent_update: (
            "Aktualisierte Einwilligung für {{ study_name }}",
            "Die Einwilligungsinformationen für {{ study_name }} haben sich geändert.\n"
            "Bitte lesen Sie sie vor Ihrer nächsten Sitzung in der Studien-App: {{ app_link }}",
        ),
    },
}


def default_for(kind: TemplateKind, language: str | None) -> tuple[str, str]:
    """The built-in (subject, body) in the language, its primary subtag ("de-AT" -> "de"),
    else English."""
    for candidate in language_candidates(language):
        if candidate in DEFAULTS:
            return DEFAULTS[candidate][kind]
    return DEFAULTS[DEFAULT_LANGUAGE][kind]


def normalise_language(tag: str) -> str:
    """BCP 47's conventional case, so "pt-br" and "pt-BR" are one template: the language in
    lower case, a script in title case, a region in upper case."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)


def language_candidates(language: str | None) -> list[str]:
    """The languages to try, best first: the tag, its primary subtag, then English."""
    candidates: list[str] = []
    if language:
        tag = normalise_language(language)
        candidates += [tag, tag.split("-")[0]]
    candidates.append(DEFAULT_LANGUAGE)
    return list(dict.fromkeys(candidates))
