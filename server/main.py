"""The FastAPI application, built from settings by a factory so tests can build their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from redis.asyncio import Redis

from server.auth.audit_router import router as audit_router
from server.auth.router import router as auth_router
from server.auth.user_sessions_router import router as user_sessions_router
from server.auth.users_router import router as users_router
from server.batteries.router import router as batteries_router
from server.consent.router import participant_router as consent_participant_router
from server.consent.router import router as consent_router
from server.coordinator_tasks.router import router as tasks_router
from server.core.config import Settings, get_settings
from server.core.db import create_autocommit_sessionmaker, create_engine, create_sessionmaker
from server.core.docs import install_docs
from server.core.errors import install_error_handlers
from server.core.logging import configure_logging
from server.core.middleware import RequestContextMiddleware
from server.core.openapi import install_openapi
from server.core.ratelimit import RateLimits, default_rate_limit
from server.core.runtime import tune_gc
from server.exports.push_router import router as redcap_pushes_router
from server.exports.router import router as exports_router
from server.health.router import router as health_router
from server.item_banks.router import router as item_banks_router
from server.jobs.router import dead_letters_router
from server.jobs.router import router as jobs_router
from server.message_templates.router import router as templates_router
from server.modules.router import router as modules_router
from server.participant_auth.router import router as participant_auth_router
from server.participants.router import router as participants_router
from server.redcap.router import router as redcap_router
from server.reminders.callbacks import router as reminder_callbacks_router
from server.reminders.router import router as reminders_router
from server.reports.router import router as reports_router
from server.schedules.router import router as schedules_router
from server.scoring.router import router as quality_router
from server.studies.router import router as studies_router
from server.submissions.reference import router as reference_router
from server.submissions.router import router as submit_router
from server.submissions.router import staff_router as submissions_staff_router
from server.submissions.schemas import SubmissionIn
from server.submissions.scoring_router import router as rescore_router
from server.submissions.session_router import router as session_router
from server.submissions.session_router import staff_router as session_staff_router
from server.sync.router import router as sync_router
from server.sync.schemas import SyncIn

# Health is left out of the general limit: load balancers poll it from one address.
RATE_LIMITED_ROUTERS: list[APIRouter] = [
    auth_router,
    user_sessions_router,
    users_router,
    studies_router,
    participant_auth_router,
    participants_router,
    session_staff_router,
    submissions_staff_router,
    item_banks_router,
    modules_router,
    batteries_router,
    jobs_router,
    dead_letters_router,
    redcap_router,
    audit_router,
    quality_router,
    rescore_router,
    schedules_router,
    consent_router,
    # Before exports_router: /api/exports/redcap-pushes/... is not an export's id.
    redcap_pushes_router,
    exports_router,
    reports_router,
    templates_router,
    tasks_router,
    reminders_router,
]
# The participant's device paths: limited per participant token by their own size limits and
# idempotency, not the per-IP default (a clinic's tablets share one address).
PARTICIPANT_ROUTERS: list[APIRouter] = [
    session_router,
    submit_router,
    sync_router,
    consent_participant_router,
]
# Provider webhooks: authenticated by the provider's signature alone, and left out of the
# per-IP limit as health is. Twilio posts every message's reports from a few shared addresses,
# and a dispatch tick of thousands of SMS brings thousands of reports a minute; a 429 could
# lose them (Twilio does not reliably post a refused report again).
WEBHOOK_ROUTERS: list[APIRouter] = [reminder_callbacks_router]
# Bodies these routes read by hand (gzip, size limits), published in the OpenAPI document.
HAND_READ_BODIES: list[type[BaseModel]] = [SubmissionIn, SyncIn]


def _redis(settings: Settings) -> Redis:
    return Redis.from_url(
        settings.REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_gc()
        yield
        await app.state.engine.dispose()
        if app.state.redis is not None:
            await app.state.redis.aclose()

    app = FastAPI(
        title="Metricis API",
        description="Cognitive-assessment research studies: sessions, submissions, sync.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by install_docs instead, with assets of the app's own rather than a CDN's.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = create_engine(settings)
    app.state.sessionmaker = create_sessionmaker(app.state.engine)
    app.state.autocommit_sessionmaker = create_autocommit_sessionmaker(app.state.engine)
    app.state.redis = _redis(settings)
    app.state.rate_limits = RateLimits(settings, app.state.redis)

    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.ALLOWED_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    app.add_middleware(RequestContextMiddleware)

    install_docs(app)
    app.include_router(health_router)
    for router in RATE_LIMITED_ROUTERS:
        app.include_router(router, dependencies=[Depends(default_rate_limit)])
    for router in PARTICIPANT_ROUTERS:
        app.include_router(router)
    for router in WEBHOOK_ROUTERS:
        app.include_router(router)
    if settings.ENABLE_REFERENCE_ENDPOINT:
        app.include_router(reference_router)
    install_openapi(app, hand_read_bodies=HAND_READ_BODIES, participant_routers=PARTICIPANT_ROUTERS)
    return app
