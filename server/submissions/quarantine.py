"""Reprocessing a quarantined submission: its stored body checked again, against the module
versions a coordinator chooses (schemas.ReprocessIn); clean, it is accepted and released.

Release is the ingest path's second half, in the request's transaction: the task rows, the
status, and the outbox events an accepted submission owes (service.release_events), so it is
synced once. The raw body and its checksum never change.
"""

from __future__ import annotations

import uuid

import orjson
import structlog
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.assessment_sessions.models import AssessmentSession
from server.core.catalogue import PublicationStatus
from server.core.errors import Conflict, NotFound, Unprocessable
from server.core.models import utcnow
from server.modules.models import Module
from server.outbox import service as outbox
from server.submissions import service, validation
from server.submissions.models import Submission, SubmissionStatus, SubmissionTask
from server.submissions.schemas import ReprocessIn, SubmissionIn, TaskIn

log = structlog.get_logger(__name__)

Modules = dict[tuple[str, int], validation.CompiledModule]


def _compiled(m: Module) -> validation.CompiledModule:
    return validation.compile_module(m.id, m.key, m.version, m.trial_schema, m.summary_schema)


async def _chosen_versions(
    db: AsyncSession, battery: Modules, choice: ReprocessIn
) -> dict[str, validation.CompiledModule]:
    """By module key, the version to check a task of that key against instead of the one it
    names; only keys of the session's battery (a task of another module stays unknown)."""
    keys = {key for key, _ in battery}
    choice_versions = choice.module_versions
    if choice_versions == "battery":
        return {}
    if choice_versions == "latest":
        newest = (
            select(Module.key, func.max(Module.version).label("version"))
            .where(Module.key.in_(keys), Module.status == PublicationStatus.published)
            .group_by(Module.key)
            .subquery()
        )
        rows = await db.execute(
            select(Module).join(
                newest, (Module.key == newest.c.key) & (Module.version == newest.c.version)
            )
        )
        return {m.key: _compiled(m) for m in rows.scalars()}
    problems = [
        {"loc": ["body", "module_versions", key], "msg": "not a module of this session's battery"}
        for key in sorted(set(choice_versions) - keys)
    ]
    chosen: dict[str, validation.CompiledModule] = {}
    for key, version in sorted(choice_versions.items()):
        if key not in keys:
            continue
        module = await db.scalar(
            select(Module).where(
                Module.key == key,
                Module.version == version,
                Module.status == PublicationStatus.published,
            )
        )
        if module is None:
            loc = ["body", "module_versions", key]
            problems.append({"loc": loc, "msg": f"no published version {version} of {key}"})
        else:
            chosen[key] = _compiled(module)
    if problems:
        raise Unprocessable("These module versions cannot be used.", details=problems)
    return chosen


def _modules_for(
    tasks: list[TaskIn], battery: Modules, chosen: dict[str, validation.CompiledModule]
) -> Modules:
    """What check_tasks looks tasks up in: the battery's modules by (key, version), with
    each task of a chosen key pointed at the chosen version."""
    modules = dict(battery)
    for task in tasks:
        if task.module_key in chosen:
            modules[(task.module_key, task.module_version)] = chosen[task.module_key]
    return modules


async def reprocess(
    db: AsyncSession, *, submission_id: uuid.UUID, user_id: uuid.UUID | None, choice: ReprocessIn
) -> None:
    """Check a quarantined submission again; accept and release it if clean, else record
    its new problems. Records who asked and when, either way. Flushes, never commits."""
    # Locked: two coordinators reprocessing at once release it once (the second sees 409).
    submission = await db.scalar(
        select(Submission)
        .where(Submission.id == submission_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if submission is None:
        raise NotFound("No such submission.")
    if submission.status != SubmissionStatus.quarantined:
        raise Conflict(
            f"This submission is {submission.status.value}: only a quarantined one is reprocessed.",
            error_code="submission_not_quarantined",
        )
    tasks = SubmissionIn.model_validate(orjson.loads(submission.raw_payload)).tasks
    battery_id = await db.scalar(
        select(AssessmentSession.battery_id).where(AssessmentSession.id == submission.session_id)
    )
    if battery_id is None:  # the session cascades to its submissions: cannot happen
        raise NotFound("No such session.")
    battery = await service.modules_of_battery(db, battery_id)
    modules = _modules_for(tasks, battery, await _chosen_versions(db, battery, choice))
    problems = validation.check_tasks(tasks, modules)
    submission.reprocessed_at = utcnow()
    submission.reprocessed_by = user_id
    if problems:
        submission.problems = problems
        await db.flush()
        log.info(
            "submission_reprocessed",
            submission_id=str(submission_id),
            status=submission.status.value,
            problems=len(problems),
        )
        return
    await db.execute(
        insert(SubmissionTask),
        [
            {
                "submission_id": submission.id,
                "position": position,
                # The version it was checked against, which may be newer than the one it named.
                "module_id": module.module_id,
                "module_key": module.key,
                "module_version": module.version,
                "summary": task.summary,
                "trials": task.trials,
                "n_trials": len(task.trials),
            }
            for position, task in enumerate(tasks)
            for module in [modules[(task.module_key, task.module_version)]]
        ],
    )
    submission.status = SubmissionStatus.accepted
    submission.problems = None
    await outbox.add(db, service.release_events(submission.id, submission.study_id))
    await db.flush()
    log.info(
        "submission_reprocessed",
        submission_id=str(submission_id),
        status=submission.status.value,
        problems=0,
    )
