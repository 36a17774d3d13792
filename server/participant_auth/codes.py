"""Human-typable one-time codes: no 0/O, 1/I/L or other look-alikes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUP = 4
LENGTH = 8  # 31**8, about 8.5e11 codes; attempts are rate-limited and codes expire


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{raw[:GROUP]}-{raw[GROUP:]}"


def normalize(code: str) -> str:
    """What the participant typed, forgiving case, spaces and dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(secret: str, code: str) -> str:
    # Keyed, so a copy of the table alone does not let anyone try all 31**8 codes offline.
    return hmac.new(secret.encode(), normalize(code).encode(), hashlib.sha256).hexdigest()
