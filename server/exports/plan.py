"""Step 1 of a build (server.exports.build): the selection written to export_submissions
(a fresh one under the filters and consent, or a freeze's exact list), the totals set, and
the modules and item banks the files will describe."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.models import utcnow
from server.exports import query
from server.exports.models import Export, ExportQualityFlag, ExportSubmission
from server.item_banks.models import ItemBank
from server.modules.models import Module


class ExportGone(LookupError):
    """The export's row is gone (its study deleted): nothing to build."""


class SelectionChanged(RuntimeError):
    """A freeze's re-run found one of its submissions gone or changed."""


@dataclass
class Plan:
    export_id: uuid.UUID
    filters: dict[str, Any]
    formats: list[str]
    data_as_of: Any
    rows_total: int
    modules: dict[tuple[str, int], Module | None] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)  # submissions left out, by reason
    item_banks: dict[uuid.UUID, ItemBank] = field(default_factory=dict)


async def plan_export(db: AsyncSession, export_id: uuid.UUID) -> Plan | str:
    export = await db.get(Export, export_id, with_for_update=True)
    if export is None:
        raise ExportGone(str(export_id))
    if export.storage_key is not None:
        return export.storage_key  # built already: a message delivered twice
    await db.execute(delete(ExportSubmission).where(ExportSubmission.export_id == export_id))
    await db.execute(delete(ExportQualityFlag).where(ExportQualityFlag.export_id == export_id))
    if export.source_export_id is not None:
        source = await db.get(Export, export.source_export_id)
        if (
            source is None
            or await query.copy_frozen(db, export_id=export_id, source_id=source.id) < 0
        ):
            raise SelectionChanged("a submission of the freeze is gone or changed")
        export.data_as_of = source.data_as_of
        export.excluded = source.excluded
        await query.record_flags(db, export_id=export_id, source_id=source.id)
    else:
        export.excluded = await query.select_submissions(
            db, export_id=export_id, study_id=export.study_id, filters=export.filters
        )
        export.data_as_of = await db.scalar(text("SELECT now()"))
        await query.record_flags(db, export_id=export_id)
    found = await query.modules_in(db, export_id, export.filters)
    export.rows_total = sum(int(m.n_trials) for m in found)
    export.rows_done = 0
    export.progress_at = utcnow()
    plan = Plan(
        export_id, export.filters, export.formats, export.data_as_of, export.rows_total,
        excluded=dict(export.excluded),
    )  # fmt: skip
    for m in found:
        module = await db.get(Module, uuid.UUID(m.module_id))
        plan.modules[(m.module_key, m.module_version)] = module
        if module is not None and module.item_bank_id is not None:
            bank = await db.get(ItemBank, module.item_bank_id)
            if bank is not None:
                plan.item_banks[module.id] = bank
    await db.flush()
    return plan
