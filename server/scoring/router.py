"""Staff read a session's scores and quality flags; coordinators set a study's thresholds."""

from __future__ import annotations

from fastapi import APIRouter

from server.auth.deps import CurrentPrincipal
from server.core.db import DBSession
from server.core.errors import error_responses
from server.scoring import quality, service
from server.scoring.deps import SessionReader
from server.scoring.schemas import QualityRule, QualityThresholds, SessionQuality
from server.studies.deps import StudyManager, StudyReader

router = APIRouter(tags=["quality"])


@router.get(
    "/api/sessions/{session_id}/quality",
    response_model=SessionQuality,
    responses=error_responses(401, 404, s404="No such session in a study of yours"),
)
async def get_session_quality(session: SessionReader, db: DBSession) -> SessionQuality:
    return await service.session_quality(db, session)


@router.get("/api/quality-rules", response_model=list[QualityRule])
async def list_quality_rules(_: CurrentPrincipal) -> list[QualityRule]:
    """Every rule with its version and default thresholds (module defaults beside)."""
    return [
        QualityRule(
            rule=rule,
            rule_version=quality.RULE_VERSIONS[rule],
            defaults=defaults,
            module_defaults={
                key: rules[rule] for key, rules in quality.MODULE_DEFAULTS.items() if rule in rules
            },
        )
        for rule, defaults in quality.DEFAULTS.items()
    ]


@router.get("/api/studies/{study_id}/quality-thresholds", response_model=QualityThresholds)
async def get_quality_thresholds(access: StudyReader, db: DBSession) -> QualityThresholds:
    return QualityThresholds(thresholds=await service.thresholds_of(db, access.study.id))


@router.put(
    "/api/studies/{study_id}/quality-thresholds",
    response_model=QualityThresholds,
    responses=error_responses(401, 403, 404, 422),
)
async def set_quality_thresholds(
    thresholds_in: QualityThresholds, access: StudyManager, db: DBSession
) -> QualityThresholds:
    """Replace the study's thresholds; they apply to sessions scored from now on."""
    await service.set_thresholds(db, study_id=access.study.id, thresholds=thresholds_in.thresholds)
    return thresholds_in
