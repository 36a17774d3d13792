"""What a report is laid out from and what comes out: plain values, no reportlab.

Apart from the layout (server.reports.render) so the service and the worker's task import no
reportlab until a report is built: reportlab (and Pillow, which it imports) weigh ~7 MB of
every worker process's memory, and most processes never build a PDF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class ModuleInfo:
    key: str
    name: str
    questionnaire: bool
    metrics: list[dict[str, Any]]  # the newest version's definitions the data uses


@dataclass
class Built:
    pdf: bytes
    pages: int


@dataclass
class Options:
    metrics: list[str] | None = None  # "module.metric" or "metric"; None: the key metrics
    generated_at: datetime = field(default_factory=datetime.now)
    page_size: str = "A4"
