"""The PDF of one signed consent record: the document's text and version, the signature data
and its time. reportlab's platypus lays the text out over as many pages as it needs."""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from server.consent.models import ConsentDocument, ConsentRecord


def _paragraphs(text: str) -> list[str]:
    # Blank lines separate paragraphs; single newlines stay line breaks. Escaped: the text is
    # the study's, and reportlab reads <, > and & as markup.
    return [
        escape(block).replace("\n", "<br/>")
        for block in text.replace("\r\n", "\n").split("\n\n")
        if block.strip()
    ]


def render(
    *,
    record: ConsentRecord,
    document: ConsentDocument,
    study_name: str,
    participant_code: str,
) -> bytes:
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    pdf = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=f"Consent record {record.id}",
        author="Metricis",
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
    )
    story: list[Flowable] = [
        Paragraph(escape(document.title), styles["Title"]),
        Paragraph(
            escape(
                f"{study_name} - consent document version {record.document_version}"
                + (f" ({document.language})" if document.language else "")
            ),
            styles["Heading3"],
        ),
        Spacer(1, 4 * mm),
    ]
    story += [Paragraph(p, styles["BodyText"]) for p in _paragraphs(document.body)]
    story += [Spacer(1, 8 * mm), Paragraph("Signature", styles["Heading2"])]
    rows = [
        ("Participant", participant_code),
        ("Signed at (UTC)", record.signed_at.strftime("%Y-%m-%d %H:%M:%S")),
        ("Attestation", record.attestation_kind.value.replace("_", " ")),
        ("Signed as", record.attestation),
        ("Document version", str(record.document_version)),
        ("Document id", str(document.id)),
        ("Record id", str(record.id)),
        ("IP address", record.ip_address or "-"),
        ("App version", record.app_version or "-"),
    ]
    table = Table(
        [
            [Paragraph(escape(k), styles["BodyText"]), Paragraph(escape(v), styles["BodyText"])]
            for k, v in rows
        ],
        colWidths=[45 * mm, None],
    )
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.25, "#999999"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (0, -1), "#f0f0f0"),
            ]
        )
    )
    story.append(table)
    pdf.build(story)
    return buffer.getvalue()
