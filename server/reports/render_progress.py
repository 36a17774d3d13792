"""The study progress report's layout: enrolment, visits completed and missed per site and
visit, sessions, and REDCap sync and reminder failures. Plain values in, PDF bytes out."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Table, TableStyle

from server.reports import styles
from server.reports.data_progress import ProgressData
from server.reports.document import Built, Options
from server.reports.render import build_pdf, wrap
from server.reports.styles import FLAG

STATUSES = ("enrolled", "active", "completed", "withdrawn")
VISIT_STATUSES = ("completed", "missed", "skipped", "open", "upcoming")


def _left(table: Table, first: int, last: int) -> Table:
    table.setStyle(TableStyle([("ALIGN", (first, 0), (last, -1), "LEFT")]))
    return table


def _visits(data: ProgressData) -> list[Any]:
    """One row per site and visit label (a repeating visit's occurrences counted together)."""
    s = styles.sheet()
    rows: list[list[Any]] = [["Site", "Visit", *(v.title() for v in VISIT_STATUSES)]]
    # Labels read left to right, counts right-aligned as in every table.
    missed_cells: list[tuple[Any, ...]] = [("ALIGN", (1, 0), (1, -1), "LEFT")]
    for site in data.sites:
        if not site.visits:
            rows.append([site.code, "no visit schedule", *["-"] * len(VISIT_STATUSES)])
        for label, counts in site.visits.items():
            rows.append(
                [site.code, wrap(label, 28), *(str(counts.get(k, 0)) for k in VISIT_STATUSES)]
            )
            if counts.get("missed"):
                missed_cells.append(("TEXTCOLOR", (3, len(rows) - 1), (3, len(rows) - 1), FLAG))
    table = styles.data_table(rows, [22 * mm, 56 * mm] + [20 * mm] * len(VISIT_STATUSES))
    table.setStyle(TableStyle(missed_cells))
    note = Paragraph(
        "Each participant's visit occurrences by status, at the participant's site; cancelled "
        "visits (replaced by a protocol change, or after a withdrawal) are not counted. Open: "
        "the window is open now; upcoming: it has not opened.",
        s["note"],
    )
    return [Paragraph("Visits completed and missed", s["h2"]), table, note]


def _sessions(data: ProgressData) -> list[Any]:
    s = styles.sheet()
    rows: list[list[Any]] = [["Site", "Completed", "Tied to no visit", "Abandoned"]]
    rows += [
        [x.code, str(x.completed_sessions), str(x.unscheduled_sessions), str(x.abandoned)]
        for x in data.sites
    ]
    return [Paragraph("Sessions", s["h2"]), styles.data_table(rows)]


def _failures(data: ProgressData) -> list[Any]:
    s = styles.sheet()
    rows: list[list[Any]] = [
        ["Site", "REDCap submissions\nfailed", "Reminders\nfailed", "Reminders\nskipped"]
    ]
    rows += [
        [
            x.code,
            str(x.sync_failed),
            str(x.reminders.get("failed", 0)),
            str(x.reminders.get("skipped", 0)),
        ]
        for x in data.sites
    ]
    out: list[Any] = [
        Paragraph("REDCap sync and reminder failures", s["h2"]),
        styles.data_table(rows),
    ]
    reasons: list[list[Any]] = [["Site", "Outcome", "Reason", "Messages"]]
    for site in data.sites:
        reasons += [
            [site.code, r.status, Paragraph(escape(r.reason), s["note"]), str(r.count)]
            for r in site.reasons
        ]
    if len(reasons) > 1:
        out += [
            Paragraph("Most common reminder failure reasons", s["h2"]),
            _left(styles.data_table(reasons, [22 * mm, 20 * mm, 116 * mm, 20 * mm]), 1, 2),
            Paragraph(
                "The provider's reason (or why the message was not sent), up to three per "
                "site; moments, addresses and numbers are left out.",
                s["note"],
            ),
        ]
    return out


def progress_report(data: ProgressData, options: Options, scope: str) -> Built:
    s = styles.sheet()
    story: list[Any] = styles.title_block(
        "Study progress report",
        [
            ("Study", data.study),
            ("Sites", scope),
            ("Generated", options.generated_at.strftime("%Y-%m-%d %H:%M UTC")),
        ],
    )
    story.append(Paragraph("Enrolment", s["h2"]))
    rows: list[list[Any]] = [["Site", *STATUSES, "Total"]]
    for site in data.sites:
        counts = [site.participants.get(k, 0) for k in STATUSES]
        rows.append([site.code, *map(str, counts), str(sum(site.participants.values()))])
    story.append(styles.data_table(rows))
    story += _visits(data) + _sessions(data) + _failures(data)
    footer = "Study progress report: enrolment, visits, sync and reminder failures per site."
    return build_pdf(story, footer, "Study progress report", options.page_size)
