"""Participant reports on a visit schedule: the visits are the schedule's, in protocol order,
by their labels; a missed visit is listed as missed with no values and the chart breaks there;
change is from the first completed visit; a session tied to no visit is still reported; a
visit's new status makes a new report, unchanged data reuses the one built."""

from __future__ import annotations

from datetime import UTC, datetime

from httpx import AsyncClient
from reportlab.graphics.shapes import PolyLine
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.config import Settings
from server.reports.charts import Point, line_chart
from server.schedules.models import VisitStatus
from tests import report_factories as rf
from tests.report_helpers import MOOD, RT, ask, built_pdf, expected_change, staff, text_of

C, M, U = VisitStatus.completed, VisitStatus.missed, VisitStatus.upcoming
PLAN = [
    ("Screening", M),
    ("Baseline", C),
    ("Week 2", C),
    ("Week 4", M),
    ("Week 6", C),
    ("Week 8", C),
    ("Week 10", U),
]
# Between Week 6 (2026-04-27) and Week 8 (2026-05-11): a session tied to no visit.
EXTRA = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


def after(lines: list[str], cell: str, within: int) -> list[list[str]]:
    """The lines after each line that is exactly `cell` (pypdf gives a table cell a line)."""
    return [lines[i + 1 : i + 1 + within] for i, x in enumerate(lines) if x == cell]


async def test_participant_report_lists_the_schedules_visits(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course, _ = await rf.scheduled_course(db, client, settings, PLAN, extra=(EXTRA,))
    _, headers = await staff(db, settings, course.study)
    response = await ask(client, headers, course.study.id, "participant", course.participant.id)
    assert response.status_code == 202, response.text
    text = text_of(await built_pdf(client, db, settings, headers, response.json()["id"]))
    lines = [line.strip() for line in text.splitlines()]

    # The visit table: every visit by its label, in protocol order, the extra session at its
    # place in time (after Week 6, before Week 8), with its status.
    shown = ["1. Screening", "2. Baseline", "3. Week 2", "4. Week 4", "5. Week 6"]
    shown += ["6. Unscheduled", "7. Week 8", "8. Week 10"]
    at = [lines.index(cell) for cell in shown]
    assert at == sorted(at), at
    assert "8 visits, 2026-03-02 to 2026-05-25 (5 completed, 2 missed, 1 upcoming)" in text
    assert after(lines, "2. Baseline", 3)[0] == [
        "2026-03-16 09:00 to 2026-03-16 21:00",
        "completed",
        "2026-03-16 10:00",
    ]
    # The upcoming visit is in the visit table only; the missed ones in every module's table
    # too (simple RT, CPT, mood), as missed, with no values.
    assert after(lines, "8. Week 10", 2) == [["2026-05-25 09:00 to 2026-05-25 21:00", "upcoming"]]
    for missed in ("1. Screening", "4. Week 4"):
        rows = after(lines, missed, 2)
        assert len(rows) == 4, rows
        assert rows[0][1] == "missed"
        assert all(row[1] == "missed" for row in rows[1:]), rows

    # Values and change from the first completed visit (Baseline, not the missed Screening),
    # computed here from the seeded trials; the unscheduled session's values too.
    base_rt, base_mood = rf.mean_rt(course.rts[0]), rf.mood_total(course.moods[0])
    for n, (rts, codes) in enumerate(zip(course.rts, course.moods, strict=True)):
        mean, total = rf.mean_rt(rts), rf.mood_total(codes)
        assert f"{mean:.1f}" in text, (n, mean)
        if n == 0:
            continue
        assert expected_change(mean, base_rt, RT["r"], RT["sd"], False) in text, n
        assert expected_change(total, base_mood, MOOD["r"], MOOD["sd"], False) in text, n
    assert "baseline" in after(lines, "2. Baseline", 3)[1]
    assert "omissions" in text  # the third completed session's lapses (Week 6)
    assert "never.in.reports" not in text and "5550001111" not in text


def test_a_chart_breaks_its_line_at_a_missed_visit() -> None:
    values = [300.0, 310.0, 320.0, 330.0]
    whole = [Point(n, v) for n, v in enumerate(values, start=1)]
    gap = [Point(1, 300.0), Point(2, 310.0), Point(3, None, missed=True), Point(4, 320.0)]
    gap.append(Point(5, 330.0))

    def lines_of(points: list[Point]) -> int:
        return sum(isinstance(shape, PolyLine) for shape in line_chart("RT", points).contents)

    assert lines_of(whole) == 1
    assert lines_of(gap) == 2


async def test_a_visits_new_status_builds_a_new_report(
    client: AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    course, occurrences = await rf.scheduled_course(db, client, settings, PLAN[1:4])
    _, headers = await staff(db, settings, course.study)
    pid = course.participant.id
    first = await ask(client, headers, course.study.id, "participant", pid)
    assert first.status_code == 202
    again = await ask(client, headers, course.study.id, "participant", pid)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]

    # Week 4, missed, is completed late by a coordinator's decision: another report.
    occurrences[2].status = VisitStatus.skipped
    await db.flush()
    changed = await ask(client, headers, course.study.id, "participant", pid)
    assert changed.status_code == 202 and changed.json()["id"] != first.json()["id"]
    text = text_of(await built_pdf(client, db, settings, headers, changed.json()["id"]))
    assert after([x.strip() for x in text.splitlines()], "3. Week 4", 2)[0][1] == "skipped"
    same = await ask(client, headers, course.study.id, "participant", pid)
    assert same.status_code == 200 and same.json()["id"] == changed.json()["id"]

    # A session report names the visit its session completed.
    session = await ask(client, headers, course.study.id, "session", course.sessions[1].id)
    text = text_of(await built_pdf(client, db, settings, headers, session.json()["id"]))
    assert "Week 2" in text and f"{rf.mean_rt(course.rts[1]):.1f}" in text


def test_a_module_of_many_metrics_and_flags_fits_the_page() -> None:
    """Five metrics with their change columns (choice RT's) ran off the page's 178 mm, and a
    session's two flags wrote past their cell: the columns narrow together, a flag a line."""
    from reportlab.lib.units import mm

    from server.reports.data_visits import Visit
    from server.reports.document import ModuleInfo
    from server.reports.render import _module_table

    metrics = [{"key": f"m{i}", "label": f"Metric number {i}", "unit": "ms",
                "reliability": {"test_retest_r": 0.8, "sd": 50.0}} for i in range(3)]  # fmt: skip
    metrics += [{"key": "acc", "label": "Accuracy", "unit": "proportion"},
                {"key": "lapses", "label": "Lapses", "unit": "count"}]  # fmt: skip
    module = ModuleInfo("choice_rt", "Choice reaction time", False, metrics)
    visit = Visit(1, "Baseline", "completed", started_at=datetime(2026, 5, 4, tzinfo=UTC),
                  scores={"choice_rt": {m["key"]: 1.0 for m in metrics}},
                  flags=[("choice_rt", "focus_loss"), (None, "anticipations")])  # fmt: skip
    table, _ = _module_table(module, metrics, [visit])
    assert sum(table._colWidths) <= 178 * mm + 0.01
    assert table._cellvalues[1][-1] == "anticipations\nfocus_loss"
