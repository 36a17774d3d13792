"""Reading a JSON request body: size limits, gzip, and parse errors in the envelope."""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from server.core.errors import AppError, PayloadTooLarge, Unprocessable

M = TypeVar("M", bound=BaseModel)


class UnsupportedEncoding(AppError):
    status_code = 415
    error_code = "unsupported_media_type"
    message = "Only gzip and identity Content-Encoding are accepted."


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body as sent (gunzipped), refusing anything over max_bytes before or after."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(details={"max_bytes": max_bytes})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(details={"max_bytes": max_bytes})
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedEncoding()
    inflater = zlib.decompressobj(wbits=31)
    try:
        # Bounded, so a small bomb cannot inflate into gigabytes.
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise Unprocessable(
            "The body is not valid gzip.", error_code="invalid_body", details=[{"loc": ["body"]}]
        ) from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            "The body is too large once decompressed.", details={"max_bytes": max_bytes}
        )
    return data


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(
            "The body is not valid JSON.",
            error_code="invalid_json",
            details=[{"loc": ["body"], "msg": str(exc).split(":")[0], "type": "json_invalid"}],
        ) from None


def parse_model(model: type[M], data: Any, loc: tuple[str | int, ...] = ("body",)) -> M:
    """Validate outside FastAPI's own body handling, with the same 422 envelope."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable(
            "The request is not valid.",
            details=[
                {"loc": [*loc, *err["loc"]], "msg": err["msg"], "type": err["type"]}
                for err in exc.errors()
            ],
        ) from None
