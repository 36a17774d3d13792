from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from server.auth import service
from server.auth.deps import CurrentPrincipal
from server.auth.schemas import Me, RefreshRequest, TokenPair
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import Unauthorized, error_response
from server.core.ratelimit import account_key, limits_of, login_ip_rate_limit
from server.user_sessions import service as sessions_service

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=TokenPair,
    dependencies=[Depends(login_ip_rate_limit)],
    responses={401: {"description": "Incorrect email or password"}},
)
async def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    db: DBSession,
    settings: AppSettings,
) -> TokenPair | JSONResponse:
    limits = limits_of(request)
    account = account_key(form.username)
    # Per account as well as per IP, so spreading guesses over many addresses does not help;
    # only failures count there, so an owner's own successful logins never use it up.
    await limits.check(limits.login, "login-account", account)
    result = await service.login(
        db,
        settings,
        email=form.username,
        password=form.password,
        user_agent=request.headers.get("user-agent", ""),
    )
    if isinstance(result, Unauthorized):
        # Answered, not raised: the failed attempt's audit entry commits with the request.
        await limits.record(limits.login, "login-account", account)
        return error_response(result)
    return result


@router.post("/refresh", response_model=TokenPair, responses={401: {"description": "Refused"}})
async def refresh(
    body: RefreshRequest, db: DBSession, settings: AppSettings
) -> TokenPair | JSONResponse:
    result = await service.refresh(db, settings, refresh_token=body.refresh_token)
    if isinstance(result, Unauthorized):
        return error_response(result)
    return result


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(db: DBSession, principal: CurrentPrincipal) -> None:
    await sessions_service.revoke(db, user_id=principal.user.id, session_id=principal.session.id)


@router.get("/me", response_model=Me)
async def me(principal: CurrentPrincipal) -> Me:
    return Me.model_validate({**principal.user.__dict__, "session_id": str(principal.session.id)})
