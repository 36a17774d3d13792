from __future__ import annotations

from fastapi import APIRouter, Request

from server.core.errors import ServiceUnavailable
from server.health import service

router = APIRouter(prefix="/api/health", tags=["health"])


@router.get("")
async def liveness() -> dict[str, str]:
    """The process is up; says nothing about its dependencies (see /ready)."""
    return {"status": "ok"}


@router.get("/ready")
async def readiness(request: Request) -> dict[str, object]:
    state = request.app.state
    readiness = await service.check(state.settings, state.engine, state.redis)
    if readiness.failing:
        raise ServiceUnavailable(
            f"Not ready: {', '.join(readiness.failing)} unavailable.",
            error_code="not_ready",
            details={
                "components": readiness.components,
                "failing": readiness.failing,
                "outbox_backlog": readiness.outbox_backlog,
            },
        )
    return {
        "status": "ready",
        "components": readiness.components,
        "outbox_backlog": readiness.outbox_backlog,
    }
