"""POST /api/reminders/callbacks/twilio: Twilio's delivery reports for the SMS it accepted.

No staff or participant token: Twilio's signature (X-Twilio-Signature, over our public URL and
the form) is the only credential, and a report without a valid one is refused with 403 before
anything is read. A signed report always gets a quick empty 200, even for a message we do not
know: Twilio would only post it again. The form also carries the recipient's number (`To`):
it is never logged, only the message's sid and status are.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request, Response, status

from server.core import clock
from server.core.config import AppSettings
from server.core.db import DBSession
from server.core.errors import Forbidden, error_responses
from server.notifications.sms import STATUS_CALLBACK_PATH
from server.reminders import delivery

router = APIRouter(tags=["reminders"])
log = structlog.get_logger(__name__)

_SIGNATURE_HEADER = "X-Twilio-Signature"


@router.post(
    STATUS_CALLBACK_PATH,
    status_code=status.HTTP_200_OK,
    response_class=Response,
    responses=error_responses(403, s403="The Twilio signature is missing or does not match"),
)
async def twilio_status(request: Request, settings: AppSettings, db: DBSession) -> Response:
    """A message's status as Twilio reports it (form-encoded: MessageSid, MessageStatus,
    ErrorCode, ErrorMessage, ...): delivered, or failed with Twilio's reason."""
    form = await request.form()
    signature = request.headers.get(_SIGNATURE_HEADER, "")
    if not delivery.signature_valid(settings, params=form, signature=signature):
        log.warning("twilio_callback_refused", reason="bad or missing signature")
        raise Forbidden(
            "The request's Twilio signature is missing or does not match.",
            error_code="invalid_signature",
        )
    report = delivery.StatusReport(
        sid=_text(form.get("MessageSid")),
        status=_text(form.get("MessageStatus")).lower(),
        error_code=_text(form.get("ErrorCode")),
        error_message=_text(form.get("ErrorMessage")),
    )
    outcome = await delivery.apply_report(db, report, now=clock.now())
    log.info("twilio_callback", sid=report.sid, status=report.status, outcome=outcome)
    return Response(status_code=status.HTTP_200_OK)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
