"""Charts as plain vector drawings (reportlab.graphics shapes, no image files): a line per
metric across visits, and a bar per visit for questionnaire totals.

Drawn by hand from a few lines and markers rather than with reportlab's chart widgets: a
chart is a handful of shapes, which keeps a 12-visit report's build short.
"""

# The shapes are imported after rl_config is set (below).
# ruff: noqa: E402

from __future__ import annotations

from dataclasses import dataclass

from reportlab import rl_config

# Before reportlab.graphics.shapes is first imported (here; nothing else imports it): without
# it every attribute a chart's shape sets is type-checked, a third of a chart's drawing time
# (profiled). Our shapes are built from plain floats and colours; reportlab documents this.
rl_config.shapeChecking = 0

from reportlab.graphics.shapes import Circle, Drawing, Line, Polygon, PolyLine, Rect, String
from reportlab.lib import colors

from server.reports.change import IMPROVED, WORSENED
from server.reports.styles import ACCENT, BAND, FLAG, GOOD, INK, MUTED, RULE

WIDTH, HEIGHT = 250.0, 120.0
LEFT, RIGHT, BOTTOM, TOP = 34.0, 8.0, 18.0, 18.0


@dataclass(frozen=True)
class Point:
    visit: int
    value: float | None
    flagged: bool = False
    mark: str = ""  # a reliable-change mark, IMPROVED or WORSENED
    missed: bool = False  # a visit missed or skipped: no value, a gap in the line


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _scale(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-9:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.12
    return lo - pad, hi + pad


def _frame(d: Drawing, title: str, lo: float, hi: float, points: list[Point]) -> None:
    """Axes, grid, title; the visit numbers under the axis, a missed visit's in red over a
    dashed line where its value would have been."""
    visits = [p.visit for p in points]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, BOTTOM, HEIGHT - TOP
    d.add(String(LEFT, HEIGHT - 11, title, fontName="Helvetica-Bold", fontSize=7.5, fillColor=INK))
    d.add(Line(x0, y0, x1, y0, strokeColor=MUTED, strokeWidth=0.5))
    d.add(Line(x0, y0, x0, y1, strokeColor=MUTED, strokeWidth=0.5))
    for value in (lo, (lo + hi) / 2, hi):
        y = y0 + (value - lo) / (hi - lo) * (y1 - y0)
        d.add(Line(x0, y, x1, y, strokeColor=RULE, strokeWidth=0.25))
        d.add(
            String(
                x0 - 3,
                y - 2.5,
                _fmt(value),
                fontName="Helvetica",
                fontSize=6,
                fillColor=MUTED,
                textAnchor="end",
            )
        )
    for p in points:
        x = _x(p.visit, visits)
        if p.missed:
            d.add(Line(x, y0, x, y1, strokeColor=FLAG, strokeWidth=0.5, strokeDashArray=[1.5, 2]))
        d.add(
            String(
                x,
                6,
                str(p.visit),
                fontName="Helvetica-Bold" if p.missed else "Helvetica",
                fontSize=6,
                fillColor=FLAG if p.missed else MUTED,
                textAnchor="middle",
            )
        )


def _x(visit: int, visits: list[int]) -> float:
    x0, x1 = LEFT + 8, WIDTH - RIGHT - 8
    if len(visits) == 1:
        return (x0 + x1) / 2
    return x0 + (visit - visits[0]) / (visits[-1] - visits[0]) * (x1 - x0)


def line_chart(
    title: str, points: list[Point], normal: tuple[float, float] | None = None
) -> Drawing:
    """Values across visits; the normal range as a band; a flagged session's point as a red
    triangle; a reliable change labelled RC+ (improved) or RC- (worse). The line breaks where
    a visit has no value (missed, or the metric not computed): it does not bridge the gap."""
    d = Drawing(WIDTH, HEIGHT)
    visits = [p.visit for p in points]
    values = [p.value for p in points if p.value is not None]
    span = values + (list(normal) if normal else [])
    lo, hi = _scale(min(span, default=0.0), max(span, default=1.0))
    y0, y1 = BOTTOM, HEIGHT - TOP

    def y(value: float) -> float:
        return y0 + (value - lo) / (hi - lo) * (y1 - y0)

    if normal is not None:
        d.add(
            Rect(
                LEFT,
                y(normal[0]),
                WIDTH - RIGHT - LEFT,
                y(normal[1]) - y(normal[0]),
                fillColor=BAND,
                strokeColor=None,
            )
        )
    _frame(d, title, lo, hi, points)
    segments: list[list[float]] = [[]]
    for p in points:
        if p.value is None:
            segments.append([])
        else:
            segments[-1] += [_x(p.visit, visits), y(p.value)]
    for coords in segments:
        if len(coords) >= 4:
            d.add(PolyLine(coords, strokeColor=ACCENT, strokeWidth=1.2))
    for p in points:
        if p.value is None:
            continue
        px, py = _x(p.visit, visits), y(p.value)
        if p.flagged:
            d.add(
                Polygon(
                    [px - 3.2, py - 2.6, px + 3.2, py - 2.6, px, py + 3.4],
                    fillColor=FLAG,
                    strokeColor=FLAG,
                    strokeWidth=0.5,
                )
            )
        else:
            d.add(Circle(px, py, 2.0, fillColor=ACCENT, strokeColor=colors.white, strokeWidth=0.5))
        if p.mark:
            d.add(
                String(
                    px,
                    py + 5,
                    p.mark,
                    fontName="Helvetica-Bold",
                    fontSize=6,
                    fillColor=GOOD if p.mark == IMPROVED else FLAG,
                    textAnchor="middle",
                )
            )
    return d


def bar_chart(
    title: str, points: list[Point], normal: tuple[float, float] | None = None
) -> Drawing:
    """A bar per visit (questionnaire totals), red where the session was flagged, over the
    normal range's band; none for a missed visit."""
    d = Drawing(WIDTH, HEIGHT)
    visits = [p.visit for p in points]
    values = [p.value for p in points if p.value is not None]
    # Headroom for the value labels over the bars.
    hi = max([*values, normal[1] if normal else 0.0, 1.0]) * 1.15
    lo = 0.0
    y0, y1 = BOTTOM, HEIGHT - TOP
    if normal is not None:
        band = (max(normal[0], lo) - lo) / (hi - lo) * (y1 - y0)
        top = (normal[1] - lo) / (hi - lo) * (y1 - y0)
        d.add(
            Rect(
                LEFT, y0 + band, WIDTH - RIGHT - LEFT, top - band, fillColor=BAND, strokeColor=None
            )
        )
    _frame(d, title, lo, hi, points)
    step = (WIDTH - RIGHT - LEFT - 16) / max(len(points), 1)
    bar = max(min(step * 0.6, 16.0), 2.0)
    for p in points:
        if p.value is None:
            continue
        px = _x(p.visit, visits)
        h = (p.value - lo) / (hi - lo) * (y1 - y0)
        d.add(
            Rect(
                px - bar / 2, y0, bar, h, fillColor=FLAG if p.flagged else ACCENT, strokeColor=None
            )
        )
        label = _fmt(p.value) + (f" {p.mark}" if p.mark else "")
        d.add(
            String(
                px,
                y0 + h + 2,
                label,
                fontName="Helvetica",
                fontSize=5.5,
                fillColor=GOOD if p.mark == IMPROVED else FLAG if p.mark == WORSENED else INK,
                textAnchor="middle",
            )
        )
    return d
