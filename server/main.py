"""The FastAPI application, built from settings by a factory so tests can build their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from server.auth.router import router as auth_router
from server.core.config import Settings, get_settings
from server.core.db import create_engine, create_sessionmaker
from server.core.errors import install_error_handlers
from server.core.logging import configure_logging
from server.core.middleware import RequestContextMiddleware
from server.core.ratelimit import RateLimits, default_rate_limit
from server.health.router import router as health_router
from server.participants.router import router as participants_router
from server.studies.router import router as studies_router
from server.user_sessions.router import router as user_sessions_router
from server.users.router import router as users_router

# Health is left out of the general limit: load balancers poll it from one address.
RATE_LIMITED_ROUTERS: list[APIRouter] = [
    auth_router,
    user_sessions_router,
    users_router,
    studies_router,
    participants_router,
]


def _redis(settings: Settings) -> Redis | None:
    if not settings.REDIS_URL:
        return None
    return Redis.from_url(
        settings.REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.engine.dispose()
        if app.state.redis is not None:
            await app.state.redis.aclose()

    app = FastAPI(
        title="Metricis API",
        description="Cognitive-assessment research studies: sessions, submissions, sync.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = create_engine(settings)
    app.state.sessionmaker = create_sessionmaker(app.state.engine)
    app.state.redis = _redis(settings)
    app.state.rate_limits = RateLimits(settings)

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

    app.include_router(health_router)
    for router in RATE_LIMITED_ROUTERS:
        app.include_router(router, dependencies=[Depends(default_rate_limit)])
    return app
