"""The OpenAPI document as the app really behaves, which /docs shows and lets people try.

FastAPI's generated document is corrected in three places:
- bodies read by hand (gzip, size limits before parsing) are published as schemas;
- every 422 is the app's error envelope, not FastAPI's {"detail": [...]}, which the app's
  handler replaces (server.core.errors);
- participant routes take a participant token (POST /api/participants/auth), not the staff
  login: their dependency reads the same bearer header as the staff one, so FastAPI would
  list the staff OAuth2 scheme, and /docs would send a staff token they refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from server.core.errors import ErrorEnvelope

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
PARTICIPANT_SCHEME = "ParticipantToken"
_PARTICIPANT_SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A participant's token: the access_token that POST /api/participants/auth "
    "answers for a one-time access code. Staff tokens are refused on these routes.",
}
# FastAPI's validation-error schemas, which no answer of this app has.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(
    app: FastAPI,
    *,
    hand_read_bodies: Iterable[type[BaseModel]],
    participant_routers: Iterable[APIRouter],
) -> None:
    bodies = list(hand_read_bodies)
    participant_operations = {
        (route.path, method.lower())
        for router in participant_routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            models: list[type[BaseModel]] = [*bodies, ErrorEnvelope]
            for model in models:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
            _envelope_for_validation_errors(schema)
            components.setdefault("securitySchemes", {})[PARTICIPANT_SCHEME] = (
                _PARTICIPANT_SECURITY_SCHEME
            )
            for (path, method), operation in _operations(schema):
                if (path, method) in participant_operations:
                    operation["security"] = [{PARTICIPANT_SCHEME: []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    return [
        ((path, method), operation)
        for path, methods in schema.get("paths", {}).items()
        for method, operation in methods.items()
    ]


def _envelope_for_validation_errors(schema: dict[str, Any]) -> None:
    for _, operation in _operations(schema):
        response = operation.get("responses", {}).get("422")
        if response is not None:
            response["content"] = {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}
            if response.get("description") == "Validation Error":
                response["description"] = "The request is not valid (details name each place)"
    schemas = schema["components"]["schemas"]
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
