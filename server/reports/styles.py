"""The one look of every report: paper, paragraph and table styles, the title block, and the
page furniture (page numbers, the footer saying what the report is).

Built once per process (the style sheet, table styles, the standard Helvetica fonts, which
need no embedding): a report only lays out its own flowables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, letter
from reportlab.lib.styles import ParagraphStyle, StyleSheet1, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

SOFTWARE = "Metricis 0.1.0"
MARGIN = 16 * mm
INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#616e7c")
RULE = colors.HexColor("#cbd2d9")
ACCENT = colors.HexColor("#2f6fb0")
FLAG = colors.HexColor("#c0392b")
BAND = colors.HexColor("#dff2e1")
GOOD = colors.HexColor("#1e8449")


def page_size(name: str) -> tuple[float, float]:
    size: tuple[float, float] = letter if name == "Letter" else A4
    return size


@cache
def sheet() -> StyleSheet1:
    base = getSampleStyleSheet()
    out = StyleSheet1()
    out.add(
        ParagraphStyle(
            "title",
            parent=base["Title"],
            fontSize=16,
            leading=20,
            alignment=0,
            spaceAfter=4,
            textColor=INK,
        )
    )
    out.add(
        ParagraphStyle(
            "h2",
            parent=base["Heading2"],
            fontSize=12,
            leading=15,
            spaceBefore=8,
            spaceAfter=4,
            textColor=ACCENT,
            keepWithNext=1,  # a module's heading never ends a page without its table
        )
    )
    out.add(
        ParagraphStyle("body", parent=base["BodyText"], fontSize=9, leading=11.5, textColor=INK)
    )
    out.add(
        ParagraphStyle("note", parent=base["BodyText"], fontSize=7.5, leading=9.5, textColor=MUTED)
    )
    return out


@cache
def table_style() -> TableStyle:
    """Data tables: a header row repeated on every page the table runs onto."""
    return TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
            ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
            ("TEXTCOLOR", (0, 0), (-1, -1), INK),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e4e7eb")),
            ("LINEBELOW", (0, 0), (-1, 0), 0.6, MUTED),
            ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
            ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
    )


@cache
def _title_style() -> TableStyle:
    return TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 8.5),
            ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 8.5),
            ("FONT", (2, 0), (2, -1), "Helvetica-Bold", 8.5),
            ("TEXTCOLOR", (0, 0), (-1, -1), INK),
            ("BOX", (0, 0), (-1, -1), 0.6, RULE),
            ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f5f7fa")),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
    )


def data_table(rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(table_style())
    return table


def title_block(title: str, fields: list[tuple[str, str]]) -> list[Any]:
    """The report's name, then study, site, participant, generated-at, software in a box."""
    pairs = [*fields, ("Software", SOFTWARE)]
    rows = []
    for i in range(0, len(pairs), 2):
        left, right = pairs[i], pairs[i + 1] if i + 1 < len(pairs) else ("", "")
        rows.append([left[0], left[1], right[0], right[1]])
    box = Table(rows, hAlign="LEFT", colWidths=[28 * mm, 62 * mm, 28 * mm, 60 * mm])
    box.setStyle(_title_style())
    return [Paragraph(title, sheet()["title"]), box]


@dataclass(frozen=True)
class Furniture:
    """Drawn on every page: what the report is (footer) and its page number."""

    footer: str

    def __call__(self, canvas: Canvas, doc: SimpleDocTemplate) -> None:
        width, _ = doc.pagesize
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(MUTED)
        canvas.setStrokeColor(RULE)
        canvas.line(MARGIN, 12 * mm, width - MARGIN, 12 * mm)
        canvas.drawString(MARGIN, 8 * mm, self.footer)
        canvas.drawRightString(width - MARGIN, 8 * mm, f"Page {doc.page}")
        canvas.restoreState()


def document(out: Any, size: str, *, title: str) -> SimpleDocTemplate:
    return SimpleDocTemplate(
        out,
        pagesize=page_size(size),
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=18 * mm,
        title=title,
        author=SOFTWARE,
        # Uncompressed: the pages are a few kB of vector text and lines; zlib costs build time.
        pageCompression=0,
        invariant=0,
    )
