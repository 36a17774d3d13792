"""The reports' layout (platypus): plain values in, PDF bytes out. No database here."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, Spacer, Table, TableStyle

from server.reports import styles
from server.reports.change import IMPROVED, WORSENED, change
from server.reports.charts import Point, bar_chart, line_chart
from server.reports.data import Header, ParticipantData
from server.reports.data_visits import Visit
from server.reports.document import Built, ModuleInfo, Options
from server.reports.styles import FLAG

LEGEND = (
    f"Charts: {IMPROVED} / {WORSENED} mark a reliable improvement / deterioration from "
    "baseline; a red triangle (a red bar) is a session with data-quality flags; the green "
    "band is the module's normal range; the x axis is the visit number, a red number over a "
    "dashed line a missed or skipped visit (no value, so the line breaks there)."
)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit == "proportion":
        return f"{value:.3f}"
    if isinstance(value, int) or (float(value).is_integer() and unit in ("count", "points")):
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def wrap(label: str, width: int = 13) -> str:
    lines: list[str] = []
    for word in label.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _shown(module: ModuleInfo, options: Options) -> list[dict[str, Any]]:
    """The metrics a report shows: those asked for, else those with a direction (the ones a
    reader compares across visits), else all."""
    if options.metrics:
        wanted = set(options.metrics)
        return [
            m for m in module.metrics if m["key"] in wanted or f"{module.key}.{m['key']}" in wanted
        ]
    keyed = [m for m in module.metrics if m.get("higher_is_better") is not None]
    return keyed or module.metrics


def _header_fields(header: Header, generated_at: datetime) -> list[tuple[str, str]]:
    return [
        ("Study", header.study),
        ("Site", header.site),
        ("Participant", header.participant_code),
        ("Generated", generated_at.strftime("%Y-%m-%d %H:%M UTC")),
    ]


def build_pdf(story: list[Any], footer: str, title: str, size: str) -> Built:
    out = io.BytesIO()
    doc = styles.document(out, size, title=title)
    furniture = styles.Furniture(footer)
    doc.build(story, onFirstPage=furniture, onLaterPages=furniture)
    return Built(out.getvalue(), doc.page)


STATUS_ORDER = ("completed", "missed", "skipped", "open", "upcoming")


def _visit_cell(visit: Visit) -> str:
    return wrap(f"{visit.number}. {visit.label}", 16)


def _visit_table(visits: list[Visit]) -> Table:
    """The schedule as it stands: every visit with its window, status and session."""
    rows: list[list[Any]] = [["Visit", "Window (UTC)", "Status", "Session"]]
    for v in visits:
        window = (
            "-"
            if v.window is None
            else f"{v.window[0]:%Y-%m-%d %H:%M} to {v.window[1]:%Y-%m-%d %H:%M}"
        )
        session = "-" if v.started_at is None else f"{v.started_at:%Y-%m-%d %H:%M}"
        rows.append([_visit_cell(v), window, v.status, session])
    table = styles.data_table(rows, [40 * mm, 62 * mm, 24 * mm, 30 * mm])
    cells = [("TEXTCOLOR", (2, i), (2, i), FLAG) for i, v in enumerate(visits, 1) if v.missed]
    table.setStyle(TableStyle([("ALIGN", (1, 0), (2, -1), "LEFT"), *cells]))
    return table


def _module_table(
    module: ModuleInfo, metrics: list[dict[str, Any]], visits: list[Visit]
) -> tuple[Table, dict[str, list[Point]]]:
    """Rows: the visits that took place or were missed. Columns: each metric's value and,
    where the module declares its reliability, the change from baseline (the first completed
    visit with a value) with its RCI and mark; then the session's flags. A missed visit's row
    says so across the metric columns, and its chart point is a gap."""
    widths, scale = _widths(metrics)
    head = ["Visit", "Date"]
    for m in metrics:
        unit = f" ({m['unit']})" if m.get("unit") and m["unit"] not in ("count",) else ""
        # Plain strings, wrapped here: a Paragraph per header cell costs its line breaking.
        head.append(wrap(f"{m['label']}{unit}", int(13 * scale)))
        if m.get("reliability"):
            head.append("Change\n(RCI)")
    head.append("Flags")
    n_cols = len(head)
    rows: list[list[Any]] = [head]
    extra: list[tuple[Any, ...]] = []
    points: dict[str, list[Point]] = {m["key"]: [] for m in metrics}
    baseline: dict[str, float] = {}
    for visit in visits:
        summary = visit.scores.get(module.key)
        if visit.missed:
            rows.append(
                [_visit_cell(visit), f"{visit.when:%Y-%m-%d}", visit.status] + [""] * (n_cols - 3)
            )
            r = len(rows) - 1
            extra += [
                ("SPAN", (2, r), (-2, r)),
                ("ALIGN", (2, r), (-2, r), "CENTER"),
                ("TEXTCOLOR", (0, r), (-1, r), FLAG),
            ]
            for m in metrics:
                points[m["key"]].append(Point(visit.number, None, missed=True))
            continue
        if summary is None or not visit.shown:
            continue
        flagged = visit.flagged(module.key)
        row: list[Any] = [_visit_cell(visit), f"{visit.when:%Y-%m-%d}"]
        for m in metrics:
            value = summary.get(m["key"])
            row.append(_fmt(value, m.get("unit", "")))
            mark = ""
            if isinstance(value, int | float) and not isinstance(value, bool):
                first = m["key"] not in baseline
                c = change(float(value), baseline.setdefault(m["key"], float(value)), m)
                mark = c.mark
                if m.get("reliability"):
                    rci = f" ({c.rci:+.2f})" if c.rci is not None else ""
                    row.append("baseline" if first else f"{c.delta:+.2f}{rci} {mark}".rstrip())
                points[m["key"]].append(Point(visit.number, float(value), flagged, mark))
            else:
                if m.get("reliability"):
                    row.append("-")
                points[m["key"]].append(Point(visit.number, None, flagged))
        rules = sorted({r for k, r in visit.flags if k in (None, module.key)})
        # A rule a line: a session with two flags wrote past its cell into the next.
        row.append("\n".join(rules))
        rows.append(row)
    table = styles.data_table(rows, widths)
    if extra:
        table.setStyle(TableStyle(extra))
    return table, points


def _widths(metrics: list[dict[str, Any]]) -> tuple[list[float], float]:
    """Fixed widths (reportlab then measures no cell), inside the page's 178 mm, and how much
    the metric columns narrowed: together, where a module shows many (choice RT's five ran
    off the page), their headers wrapped shorter to match."""
    natural = [w for m in metrics for w in ([21, 29] if m.get("reliability") else [21])]
    flags = max(26.0, 178 - 45 - sum(natural))
    scale = min(1.0, (178 - 45 - flags) / sum(natural)) if natural else 1.0
    return [w * mm for w in [28, 17, *(w * scale for w in natural), flags]], scale


def _span(data: ParticipantData) -> str:
    visits = data.visits
    if not visits:
        return "No visits or completed sessions in this period."
    first, last = min(v.when for v in visits), max(v.when for v in visits)
    text = f"{len(visits)} visits, {first:%Y-%m-%d} to {last:%Y-%m-%d}"
    if data.scheduled:
        counts = {k: sum(v.status == k for v in visits) for k in STATUS_ORDER}
        text += (
            " (" + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + "). Visits are "
            "the participant's scheduled visits in protocol order; a session tied to no visit "
            "is listed as an unscheduled session at its place in time."
        )
    else:
        text += (
            ". The participant is on no visit schedule: visits are their completed sessions "
            "in time order."
        )
    return text + (
        " Change is from the first completed visit (baseline); RCI is the reliable change "
        f"index (Jacobson and Truax 1991): {IMPROVED} a reliable improvement, {WORSENED} a "
        "reliable deterioration (|RCI| &gt; 1.96)."
    )


def participant_report(data: ParticipantData, modules: list[ModuleInfo], options: Options) -> Built:
    s = styles.sheet()
    story: list[Any] = styles.title_block(
        "Participant report: course across visits",
        _header_fields(data.header, options.generated_at),
    )
    visits = data.visits
    story += [Spacer(1, 3 * mm), Paragraph(_span(data), s["body"])]
    if data.scheduled and visits:
        story += [Paragraph("Visits", s["h2"]), _visit_table(visits)]
    for module in modules:
        metrics = _shown(module, options)
        if not metrics:
            continue
        table, points = _module_table(module, metrics, visits)
        story += [Paragraph(module.name, s["h2"]), table, Spacer(1, 3 * mm)]
        charts = []
        for m in metrics:
            series = points[m["key"]]
            if not any(p.value is not None for p in series):
                continue
            nr = m.get("normal_range")
            band = (nr["low"], nr["high"]) if nr else None
            if module.questionnaire and m.get("reliability"):
                charts.append(bar_chart(f"{m['label']} per visit", series, band))
            elif m.get("reliability") or nr:
                charts.append(line_chart(m["label"], series, band))
        for i in range(0, len(charts), 2):
            pair = charts[i : i + 2]
            story.append(KeepTogether(Table([pair], hAlign="LEFT")))
        if charts:
            story.append(Paragraph(LEGEND, s["note"]))
        notes = [
            f"{m['label']}: r = {m['reliability']['test_retest_r']}, "
            f"SD = {m['reliability']['sd']} ({m['reliability'].get('source', '')})"
            for m in metrics
            if m.get("reliability")
        ]
        if notes:
            story.append(Paragraph("Reliability used: " + "; ".join(notes), s["note"]))
    footer = (
        f"Participant report (course across visits) for {data.header.participant_code}, "
        "identified by code only. Confidential research data."
    )
    return build_pdf(
        story, footer, f"Participant report {data.header.participant_code}", options.page_size
    )


def session_report(data: ParticipantData, modules: list[ModuleInfo], options: Options) -> Built:
    s = styles.sheet()
    visit = next((v for v in data.visits if v.started_at is not None), None)
    fields = _header_fields(data.header, options.generated_at)
    if visit is not None:
        fields.append(("Session", f"{visit.when:%Y-%m-%d %H:%M} UTC"))
        if visit.window is not None:
            fields.append(("Visit", visit.label))
    story: list[Any] = styles.title_block("Session report", fields)
    if visit is None:
        story.append(Paragraph("This session is not completed.", s["body"]))
    for module in modules:
        if visit is None or module.key not in visit.scores:
            continue
        summary = visit.scores[module.key]
        rows: list[list[Any]] = [["Metric", "Value", "Unit"]]
        rows += [
            [m["label"], _fmt(summary.get(m["key"]), m.get("unit", "")), m.get("unit", "")]
            for m in module.metrics
        ]
        story += [Paragraph(module.name, s["h2"]), styles.data_table(rows)]
    flags = sorted({(k or "session", r) for k, r in visit.flags}) if visit else []
    story.append(Paragraph("Data-quality flags", s["h2"]))
    if flags:
        story.append(styles.data_table([["Task", "Rule"], *[[k, r] for k, r in flags]]))
    else:
        story.append(Paragraph("None fired.", s["body"]))
    footer = (
        f"Session report for participant {data.header.participant_code}, identified by code "
        "only. Confidential research data."
    )
    return build_pdf(story, footer, "Session report", options.page_size)
