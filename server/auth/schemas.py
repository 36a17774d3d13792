from __future__ import annotations

from pydantic import BaseModel, Field

from server.users.schemas import UserRead


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=16, max_length=256)


class Me(UserRead):
    session_id: str
