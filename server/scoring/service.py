"""Storing scores and quality checks, reading them back, and a study's thresholds.

Takes plain values, never the submission rows: server.submissions.scoring_run reads a
submission and its session and calls here (submissions sit above this package). Flushes,
never commits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.models import utcnow
from server.scoring import quality
from server.scoring.compare import compare
from server.scoring.models import QualityCheck, StudyQualitySettings, TaskScore
from server.scoring.schemas import (
    MetricComparison,
    QualityCheckRead,
    SessionQuality,
    TaskScoreRead,
    ThresholdMap,
    Trace,
)
from server.scoring.scorers import ScoringInput, scorer_for


@dataclass(frozen=True)
class TaskToScore:
    submission_id: uuid.UUID
    position: int
    module_id: uuid.UUID
    module_key: str
    module_version: int
    metrics: list[dict[str, Any]]
    # The item bank's items for a questionnaire with one, else None.
    items: list[dict[str, Any]] | None
    summary: dict[str, Any]
    trials: list[dict[str, Any]]


async def store_scores(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    raw_checksum: str,
    tasks: list[TaskToScore],
    now: datetime | None = None,
) -> None:
    """Score each task with its module version's scorer; a task already scored by that scorer
    version keeps its row (idempotent, and an older version's rows stay)."""
    rows = []
    for task in tasks:
        scorer = scorer_for(task.module_key, task.module_version, has_item_bank=bool(task.items))
        result = scorer.score(ScoringInput(task.trials, task.metrics, task.items))
        comparison = compare(task.summary, result.summary, task.metrics)
        rows.append(
            {
                "id": uuid.uuid4(),
                "submission_id": task.submission_id,
                "position": task.position,
                "session_id": session_id,
                "module_id": task.module_id,
                "module_key": task.module_key,
                "module_version": task.module_version,
                "scorer_key": scorer.key,
                "scorer_version": scorer.version,
                "raw_checksum": raw_checksum,
                "client_summary": task.summary,
                "server_summary": result.summary,
                "comparison": comparison,
                "n_mismatches": sum(1 for c in comparison.values() if c["mismatch"]),
                "problems": result.problems,
                "computed_at": now or utcnow(),
            }
        )
    if rows:
        statement = pg_insert(TaskScore).values(rows).on_conflict_do_nothing()
        await db.execute(statement)


async def mismatches_by_task(db: AsyncSession, session_id: uuid.UUID) -> dict[tuple[Any, int], int]:
    """(submission_id, position) -> mismatches of its latest score."""
    rows = await db.execute(
        select(TaskScore.submission_id, TaskScore.position, TaskScore.n_mismatches)
        .where(TaskScore.session_id == session_id)
        .order_by(TaskScore.computed_at)
    )
    return {(s, p): n for s, p, n in rows}


async def thresholds_of(db: AsyncSession, study_id: uuid.UUID) -> ThresholdMap:
    row = await db.get(StudyQualitySettings, study_id)
    return dict(row.thresholds) if row is not None else {}


async def set_thresholds(
    db: AsyncSession, *, study_id: uuid.UUID, thresholds: ThresholdMap
) -> None:
    statement = pg_insert(StudyQualitySettings).values(
        study_id=study_id, thresholds=thresholds, updated_at=utcnow()
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[StudyQualitySettings.study_id],
            set_={"thresholds": thresholds, "updated_at": utcnow()},
        )
    )


async def replace_checks(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    task_checks: list[tuple[uuid.UUID, quality.Check]],
    session_checks: list[quality.Check],
    now: datetime | None = None,
) -> None:
    """The session's checks, computed whole: what was there is replaced (the caller holds the
    session's lock, so two submissions scored at once cannot interleave)."""
    await db.execute(delete(QualityCheck).where(QualityCheck.session_id == session_id))
    checks = [(s, c) for s, c in task_checks] + [(None, c) for c in session_checks]
    if not checks:
        return
    await db.execute(
        pg_insert(QualityCheck).values(
            [
                {
                    "id": uuid.uuid4(),
                    "session_id": session_id,
                    "scope": c.scope,
                    "submission_id": submission_id,
                    "position": c.position,
                    "module_key": c.module_key,
                    "rule": c.rule,
                    "rule_version": c.rule_version,
                    "threshold": c.threshold,
                    "observed": c.observed,
                    "fired": c.fired,
                    "detail": c.detail,
                    "computed_at": now or utcnow(),
                }
                for submission_id, c in checks
            ]
        )
    )


def _check_read(c: QualityCheck) -> QualityCheckRead:
    return QualityCheckRead(
        rule=c.rule,
        rule_version=c.rule_version,
        scope=c.scope,
        submission_id=c.submission_id,
        position=c.position,
        module_key=c.module_key,
        threshold=c.threshold,
        observed=c.observed,
        fired=c.fired,
        detail=c.detail,
    )


async def _checks(db: AsyncSession, session_ids: list[uuid.UUID]) -> list[QualityCheck]:
    rows = await db.scalars(
        select(QualityCheck)
        .where(QualityCheck.session_id.in_(session_ids))
        .order_by(QualityCheck.scope, QualityCheck.submission_id, QualityCheck.position)
    )
    return list(rows)


async def flags_by_session(
    db: AsyncSession, session_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[QualityCheckRead]]:
    """The fired checks of each session, for the staff's session list."""
    flags: dict[uuid.UUID, list[QualityCheckRead]] = defaultdict(list)
    for c in await _checks(db, session_ids):
        if c.fired:
            flags[c.session_id].append(_check_read(c))
    return flags


async def session_quality(db: AsyncSession, session: AssessmentSession) -> SessionQuality:
    checks = [_check_read(c) for c in await _checks(db, [session.id])]
    scores = await db.scalars(
        select(TaskScore)
        .where(TaskScore.session_id == session.id)
        .order_by(TaskScore.computed_at, TaskScore.position)
    )
    return SessionQuality(
        session_id=session.id,
        device=session.device,
        app_version=session.app_version,
        flags=[c for c in checks if c.fired],
        checks=checks,
        scores=[
            TaskScoreRead(
                position=s.position,
                trace=Trace(
                    module_key=s.module_key,
                    module_version=s.module_version,
                    scorer_key=s.scorer_key,
                    scorer_version=s.scorer_version,
                    raw_checksum=s.raw_checksum,
                    submission_id=s.submission_id,
                    session_id=s.session_id,
                    device=session.device,
                    app_version=session.app_version,
                ),
                client_summary=s.client_summary,
                server_summary=s.server_summary,
                comparison={k: MetricComparison(**v) for k, v in s.comparison.items()},
                n_mismatches=s.n_mismatches,
                problems=s.problems,
                computed_at=s.computed_at,
            )
            for s in scores
        ],
    )
