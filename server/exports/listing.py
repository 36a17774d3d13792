"""A study's exports and REDCap pushes, newest first, as the caller may see them: a
site-scoped member only those of their sites (never a whole-study one), as when reading one
(server.exports.deps)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.errors import Unprocessable
from server.exports.models import Export, RedcapPush
from server.studies.access import StudyAccess

Row = TypeVar("Row", Export, RedcapPush)


def _visible(model: type[Export] | type[RedcapPush], access: StudyAccess) -> ColumnElement[bool]:
    clause = model.study_id == access.study.id
    scope = access.sites.site_ids
    if scope is None:
        return clause
    sites = model.filters["site_ids"]
    within: ColumnElement[bool] = sites.contained_by(sorted(str(s) for s in scope))
    return clause & (func.jsonb_typeof(sites) == "array") & within


async def page(
    db: AsyncSession,
    model: type[Row],
    access: StudyAccess,
    *,
    cursor: uuid.UUID | None,
    limit: int,
    where: tuple[ColumnElement[bool], ...] = (),
) -> tuple[list[Row], str | None]:
    """One page, newest first, and the cursor of the next (the last row's id), if any."""
    query: Any = select(model).where(_visible(model, access), *where)
    if cursor is not None:
        last = (
            await db.execute(
                select(model.created_at, model.id).where(
                    model.id == cursor, _visible(model, access)
                )
            )
        ).first()
        if last is None:
            raise Unprocessable("No such cursor: pass a next_cursor this list gave.")
        query = query.where(
            tuple_(model.created_at, model.id) < tuple_(literal(last[0]), literal(last[1]))
        )
    ordered = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await db.execute(ordered)).scalars().all())
    return rows[:limit], str(rows[limit - 1].id) if len(rows) > limit else None
