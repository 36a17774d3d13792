"""valid_export_id and the REDCap push's: another study's (or one of sites beyond a site-scoped
member's) is 404."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from server.auth.deps import CurrentPrincipal, Principal
from server.core.db import DBSession
from server.core.errors import NotFound
from server.exports.models import Export, RedcapPush
from server.studies.access import Permission, StudyAccess, require_study_of


def within_scope(filters: dict[str, Any], access: StudyAccess) -> bool:
    """A site-scoped member sees exports and pushes of their sites only, never whole-study
    ones (server.exports.listing lists by the same rule)."""
    scope, sites = access.sites.site_ids, filters.get("site_ids")
    return scope is None or (sites is not None and {uuid.UUID(s) for s in sites} <= scope)


@dataclass(frozen=True)
class ExportAccess:
    export: Export
    study: StudyAccess
    principal: Principal


def export_access(permission: str) -> Callable[..., Awaitable[ExportAccess]]:
    async def dependency(
        export_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
    ) -> ExportAccess:
        export = await db.get(Export, export_id)
        if export is None:
            raise NotFound("No such export.")
        access = await require_study_of(db, principal, export.study_id, permission, thing="export")
        if not within_scope(export.filters, access):
            raise NotFound("No such export.")
        return ExportAccess(export, access, principal)

    return dependency


ExportReader = Annotated[ExportAccess, Depends(export_access(Permission.EXPORT))]


@dataclass(frozen=True)
class PushAccess:
    push: RedcapPush
    study: StudyAccess
    principal: Principal


async def _push_access(
    push_id: uuid.UUID, db: DBSession, principal: CurrentPrincipal
) -> PushAccess:
    push = await db.get(RedcapPush, push_id)
    if push is None:
        raise NotFound("No such REDCap push.")
    access = await require_study_of(
        db, principal, push.study_id, PUSH_PERMISSION, thing="REDCap push"
    )
    if not within_scope(push.filters, access):
        raise NotFound("No such REDCap push.")
    return PushAccess(push, access, principal)


# Pushing writes into REDCap what the sync writes, as a resync does: the study's coordinators
# (a site-scoped one for their sites' sessions); researchers export, they do not write to
# REDCap; viewers neither.
PUSH_PERMISSION = Permission.MANAGE
PushReader = Annotated[PushAccess, Depends(_push_access)]
